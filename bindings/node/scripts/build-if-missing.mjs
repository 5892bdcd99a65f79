// `npm install` hook: builds the native addon with `napi build --platform` when no prebuilt
// `bcv.<platform>.node` is present next to package.json. Respects CARGO_TARGET_DIR and BCV_NODE_RELEASE=1.
import { readdirSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
if (readdirSync(root).some((f) => /^bcv\..+\.node$/.test(f))) process.exit(0);
const args = ['napi', 'build', '--platform'];
if (process.env.BCV_NODE_RELEASE === '1') args.push('--release');
const res = spawnSync('npx', ['--no-install', ...args], { cwd: root, stdio: 'inherit' });
process.exit(res.status ?? 1);
