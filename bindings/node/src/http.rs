//! HTTP/1.1: `httpServe`, `httpRequest` and the methods of the `HttpServer`, `IncomingMessage` and
//! `Trailers` handles. Conversion only; the lifetimes are core's (LIFETIMES.md, the motivating case):
//! an incoming message is a resource whose body stream and trailers future are dependent children, so
//! releasing the message leaves them working, closing it ends them with `Closed{PARENT}`, and closing or
//! releasing the body first abandons it (the trailers end with `Closed{ABANDONED}`).

use bcv_core::handle::{HttpFields, HttpHead};
use bytes::Bytes;
use napi::Env;
use napi::bindgen_prelude::Uint8Array;
use napi_derive::napi;

use crate::env::{EnvLocal, Out, runtime};
use crate::error::JsErr;
use crate::handle::{Handle, Kind, enter, run_op};
use crate::js::RawValue;

/// A detached snapshot of a message head (CR-det): plain data that outlives the message.
#[napi(object)]
pub struct HttpHeadSnapshot {
    /// Request method (`'GET'`, …); absent for a response.
    pub method: Option<String>,
    /// Request target (`'/path?query'`); absent for a response.
    pub target: Option<String>,
    /// Response status; absent for a request.
    pub status: Option<u32>,
    /// Header fields in order (names in lower case).
    #[napi(ts_type = "Array<[string, string]>")]
    pub headers: HttpFields,
}

impl From<HttpHead> for HttpHeadSnapshot {
    fn from(h: HttpHead) -> HttpHeadSnapshot {
        HttpHeadSnapshot { method: h.method, target: h.uri, status: h.status.map(u32::from), headers: h.headers }
    }
}

fn status_code(local: &EnvLocal, status: u32) -> napi::Result<u16> {
    u16::try_from(status).map_err(|_| JsErr::invalid(format!("invalid status {status}")).throw(local))
}

/// Serves HTTP/1.1 on `host:port` (port 0 picks a free port). Throws `BCV_IO` naming the address.
#[napi]
pub fn http_serve(env: Env, host: String, port: u32) -> napi::Result<Handle> {
    let local = enter(&env)?;
    let addr = crate::resolve_addr(&host, port as u16).map_err(|e| e.throw(&local))?;
    let server = runtime().http_serve(addr).map_err(|e| JsErr::from(e).throw(&local))?;
    Ok(Handle::wrap(&local, Kind::HttpServer(server)))
}

/// Sends a request and resolves with the response (an `IncomingMessage` handle) once its head arrived.
/// `body`, a read stream, is consumed. Rejects with `BCV_INVALID_ARGUMENT` for a bad URL, method or
/// header, `BCV_IO` naming the URL when the exchange fails.
#[napi(ts_return_type = "Promise<Handle>")]
pub fn http_request(
    env: Env,
    method: String,
    url: String,
    #[napi(ts_arg_type = "Array<[string, string]>")] headers: HttpFields,
    body: Option<&Handle>,
) -> napi::Result<RawValue> {
    let local = enter(&env)?;
    let body = body.map(|b| b.take_read(&local)).transpose()?;
    let scope = local.scopes.borrow().last().map(|s| s.id);
    let fut = async move { runtime().http_request(&method, &url, &headers, body).await };
    run_op(&local, fut, move |r| r.map(|m| Out::Handle(Kind::Message(m), scope)).map_err(JsErr::from), false)
}

#[napi]
impl Handle {
    /// Waits for the next request (an `IncomingMessage` handle). Rejects with `BCV_CLOSED` once the server
    /// is closed.
    #[napi(ts_return_type = "Promise<Handle>")]
    pub fn next_request(&self, env: Env) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let kind = self.get(&local)?;
        if !matches!(*kind, Kind::HttpServer(_)) {
            return Err(self.wrong(&local, "nextRequest"));
        }
        let scope = local.scopes.borrow().last().map(|s| s.id);
        let fut = async move {
            match &*kind {
                Kind::HttpServer(s) => s.next_request().await,
                _ => unreachable!("checked above"),
            }
        };
        run_op(&local, fut, move |r| r.map(|m| Out::Handle(Kind::Message(m), scope)).map_err(JsErr::from), false)
    }

    /// A detached snapshot of the message head. Throws `BCV_CLOSED` once the message is closed.
    #[napi]
    pub fn head(&self, env: Env) -> napi::Result<HttpHeadSnapshot> {
        let local = enter(&env)?;
        let kind = self.get(&local)?;
        let Kind::Message(m) = &*kind else { return Err(self.wrong(&local, "head")) };
        m.head().map(HttpHeadSnapshot::from).map_err(|e| JsErr::from(e).throw(&local))
    }

    /// The first value of header `name` (case-insensitive), or `null`. Throws `BCV_CLOSED` once closed.
    #[napi]
    pub fn header(&self, env: Env, name: String) -> napi::Result<Option<String>> {
        let local = enter(&env)?;
        let kind = self.get(&local)?;
        let Kind::Message(m) = &*kind else { return Err(self.wrong(&local, "header")) };
        m.header(&name).map_err(|e| JsErr::from(e).throw(&local))
    }

    /// Takes the body stream and the trailers future (once): `[body, trailers]`. Throws
    /// `BCV_ALREADY_TAKEN`, `BCV_CLOSED`.
    #[napi(ts_return_type = "[Handle, Handle]")]
    pub fn take_body(&self, env: Env) -> napi::Result<Vec<Handle>> {
        let local = enter(&env)?;
        let kind = self.get(&local)?;
        let Kind::Message(m) = &*kind else { return Err(self.wrong(&local, "takeBody")) };
        let (body, trailers) = m.take_body().map_err(|e| JsErr::from(e).throw(&local))?;
        Ok(vec![
            Handle::wrap_child(&local, Kind::Read(body), self),
            Handle::wrap_child(&local, Kind::Trailers(trailers), self),
        ])
    }

    /// Server side: sends the response head and returns the response body's write end. Throws
    /// `BCV_ALREADY_TAKEN` (second response, or a client-side response), `BCV_INVALID_ARGUMENT`,
    /// `BCV_CLOSED`.
    #[napi]
    pub fn respond(
        &self,
        env: Env,
        status: u32,
        #[napi(ts_arg_type = "Array<[string, string]>")] headers: HttpFields,
    ) -> napi::Result<Handle> {
        let local = enter(&env)?;
        let kind = self.get(&local)?;
        let Kind::Message(m) = &*kind else { return Err(self.wrong(&local, "respond")) };
        let status = status_code(&local, status)?;
        let writer = m.respond(status, &headers).map_err(|e| JsErr::from(e).throw(&local))?;
        Ok(Handle::wrap_child(&local, Kind::Write(writer), self))
    }

    /// Server side: responds with the complete `body` (copied); resolves once it is handed to the
    /// connection. Throws as `respond`; rejects with `BCV_CLOSED` if the exchange ends first.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn respond_with(
        &self,
        env: Env,
        status: u32,
        #[napi(ts_arg_type = "Array<[string, string]>")] headers: HttpFields,
        body: Uint8Array,
    ) -> napi::Result<RawValue> {
        let local = enter(&env)?;
        let kind = self.get(&local)?;
        let Kind::Message(m) = &*kind else { return Err(self.wrong(&local, "respondWith")) };
        let status = status_code(&local, status)?;
        let writer = m.respond(status, &headers).map_err(|e| JsErr::from(e).throw(&local))?;
        let body = Bytes::copy_from_slice(&body);
        // `IncomingMessage::respond_with`, without blocking: write everything, then finish.
        let fut = async move {
            writer.write_bytes(body).await.map_err(JsErr::from)?;
            writer.finish().map_err(JsErr::from)
        };
        run_op(&local, fut, |r| r.map(|()| Out::Undefined), false)
    }
}
