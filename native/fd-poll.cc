// Readiness of a file descriptor, heard on the calling thread's own event loop (libuv's uv_poll, i.e.
// epoll_ctl on the loop's epoll fd): how the main thread hears KVM's ioeventfds and tap devices
// without a thread of its own (see src/devices/virtio/fd-watcher.ts for why Node cannot do this).
//
// fdWatch(fd, onReadable) -> handle: onReadable(errno) runs on this thread whenever `fd` is readable
// (level-triggered: again on the next loop turn until it has been read dry); errno is 0, or what the
// poll reported. The handle does not keep the loop alive. fdUnwatch(handle) stops it for good.
// No policy here: what to read, and what an error means, is the caller's.
#include <uv.h>

#include "addon.h"
#include "args.h"

namespace tsvmm {
namespace {

// Lives until both libuv has closed the handle and the JS External holding it has been collected.
struct Watch {
  uv_poll_t poll;
  napi_env env;
  napi_ref on_readable;
  napi_async_context context;
  bool stopped = false;    // uv_close called: no callback runs any more
  bool closed = false;     // libuv let go of the handle
  bool finalized = false;  // the External is gone
};

void OnPoll(uv_poll_t* handle, int status, int /* events */) {
  Watch* w = static_cast<Watch*>(handle->data);
  napi_env env = w->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value callback, receiver, arg, result;
  napi_get_reference_value(env, w->on_readable, &callback);
  napi_get_global(env, &receiver);  // make_callback needs an object
  napi_create_int32(env, status < 0 ? -status : 0, &arg);
  // make_callback, not call_function: it runs the nextTick queue and microtasks afterwards, as
  // every other event-loop callback in Node does.
  if (napi_make_callback(env, w->context, receiver, callback, 1, &arg, &result) == napi_pending_exception) {
    napi_value error;
    napi_get_and_clear_last_exception(env, &error);
    napi_fatal_exception(env, error);  // an exception escaping an event callback: 'uncaughtException'
  }
  napi_close_handle_scope(env, scope);
}

void OnClosed(uv_handle_t* handle) {
  Watch* w = static_cast<Watch*>(handle->data);
  w->closed = true;
  if (w->finalized) delete w;
}

void Stop(Watch* w) {
  w->stopped = true;
  uv_poll_stop(&w->poll);
  uv_close(reinterpret_cast<uv_handle_t*>(&w->poll), OnClosed);
}

// The handle was dropped without fdUnwatch: stop watching (the callback could not be unwatched
// anymore), but leave the async context alone, which must not be destroyed from a finalizer.
void Finalize(Napi::Env env, Watch* w) {
  w->finalized = true;
  if (!w->stopped) {
    napi_delete_reference(env, w->on_readable);
    Stop(w);
  } else if (w->closed) {
    delete w;
  }
}

Napi::Value fdWatch(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  int32_t fd;
  if (!args.Int32(0, "fd", &fd)) return {};
  if (!info[1].IsFunction()) {
    Napi::TypeError::New(info.Env(), "fdWatch: argument onReadable must be a function").ThrowAsJavaScriptException();
    return {};
  }
  napi_env env = info.Env();
  uv_loop_t* loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) {
    Napi::Error::New(info.Env(), "fdWatch: this thread has no event loop").ThrowAsJavaScriptException();
    return {};
  }
  Watch* w = new Watch();
  w->env = env;
  int r = uv_poll_init(loop, &w->poll, fd);
  if (r < 0) {
    delete w;
    return ThrowSyscallError(info.Env(), "uv_poll_init", -r);
  }
  w->poll.data = w;
  r = uv_poll_start(&w->poll, UV_READABLE, OnPoll);
  if (r < 0) {
    w->finalized = true;  // no External: OnClosed frees it
    Stop(w);
    return ThrowSyscallError(info.Env(), "uv_poll_start", -r);
  }
  uv_unref(reinterpret_cast<uv_handle_t*>(&w->poll));
  napi_create_reference(env, info[1], 1, &w->on_readable);
  napi_async_init(env, nullptr, Napi::String::New(info.Env(), "tsvmm.fdWatch"), &w->context);
  return Napi::External<Watch>::New(info.Env(), w, Finalize);
}

Napi::Value fdUnwatch(const Napi::CallbackInfo& info) {
  if (!info[0].IsExternal()) {
    Napi::TypeError::New(info.Env(), "fdUnwatch: argument handle must be what fdWatch returned").ThrowAsJavaScriptException();
    return {};
  }
  Watch* w = info[0].As<Napi::External<Watch>>().Data();
  if (w->stopped) return info.Env().Undefined();  // unwatching twice is harmless
  napi_delete_reference(w->env, w->on_readable);
  napi_async_destroy(w->env, w->context);
  Stop(w);
  return info.Env().Undefined();
}

}  // namespace

void RegisterFdPoll(Napi::Env env, Napi::Object exports) {
  EXPORT_FUNCTION(env, exports, fdWatch);
  EXPORT_FUNCTION(env, exports, fdUnwatch);
}

}  // namespace tsvmm
