// Pipes bytes through gzip and AES-256-GCM and back, and prints what it did:
//
//   writer ──pipe──▶ gzip ──▶ encrypt ──▶ decrypt ──▶ gunzip ──▶ reader
//
// Every stage is a bcv transformer running on the SDK's threads; this program only writes the input,
// finishes the writer, and reads the output. Then it shows what a wrong key does, and shuts the runtime
// down as a process exit hook would (LIFETIMES.md A5).

import BCV
import Foundation

let text = String(repeating: "bcv streams keep their lifetimes straight. ", count: 2_000)
let input = Data(text.utf8)
let key = Data((0..<32).map { UInt8($0) })

// The chain: pipe → gzip → encrypt, then decrypt → gunzip. Each call consumes its input stream.
let ends = try pipe(capacity: 16 * 1024)
let gzip = try gzipCompress(input: ends.reader, level: 6)
let sealed = try aeadEncrypt(input: gzip.stream, key: key)

// Tee the ciphertext so its size can be printed: read it all, then decrypt from the bytes.
async let ciphertext = sealed.stream.readAll()
for chunk in stride(from: 0, to: input.count, by: 10_000) {
    try await ends.writer.write(data: input[chunk..<min(chunk + 10_000, input.count)])
}
try ends.writer.finish()
let cipher = try await ciphertext
print("input:      \(input.count) bytes")
print("gzip+aead:  \(cipher.count) bytes (gzip, then AES-256-GCM in authenticated 64 KiB chunks)")

let opened = try aeadDecrypt(input: streamFromBytes(data: cipher), key: key)
let gunzip = try gzipDecompress(input: opened.stream)
var output = Data()
for try await chunk in gunzip.stream.chunks() {
    output.append(chunk)
}
print("round trip: \(output.count) bytes, identical: \(output == input)")
guard output == input else { exit(1) }

// A wrong key never yields plaintext, nor a clean end.
let wrong = try aeadDecrypt(input: streamFromBytes(data: cipher), key: Data(repeating: 0xAB, count: 32))
do {
    _ = try await wrong.stream.readAll()
    print("wrong key:  decrypted?!")
    exit(1)
} catch let error as BcvError {
    print("wrong key:  \(error)")
}

// Release everything, then shut the runtime down: live nodes reach 0.
try reaperFlush()
try shutdown(timeoutMs: 2_000)
print("after shutdown: \(diagnostics().liveNodes) live nodes")
