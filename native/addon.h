// Shared by every native/*.cc: the per-instance addon state, the one way a failed system call is
// reported, and how each concept file exports its wrappers.
#pragma once

#include <napi.h>

namespace tsvmm {

// Every worker_thread loads its own instance of the addon, and a JS reference belongs to one
// environment, so the error constructor lives here (env instance data), never in a global.
class AddonInstance : public Napi::Addon<AddonInstance> {
 public:
  AddonInstance(Napi::Env env, Napi::Object exports);

  Napi::FunctionReference error_constructor;

 private:
  Napi::Value SetErrorConstructor(const Napi::CallbackInfo& info);
};

// Throws `new Ctor(syscall, err)` with the registered constructor. Returns an empty value so that a
// wrapper can `return ThrowSyscallError(...)`. Callers pass errno by value, read right after the
// failing call, before any N-API call can overwrite it.
Napi::Value ThrowSyscallError(Napi::Env env, const char* syscall, int err);

// The JS name of a wrapper is its C++ name, so the two cannot drift apart.
#define EXPORT_FUNCTION(env, exports, fn) (exports).Set(#fn, Napi::Function::New<fn>(env, #fn))

// One per concept file.
void RegisterFds(Napi::Env env, Napi::Object exports);
void RegisterMemory(Napi::Env env, Napi::Object exports);
void RegisterBitmap(Napi::Env env, Napi::Object exports);
void RegisterPages(Napi::Env env, Napi::Object exports);
void RegisterThreads(Napi::Env env, Napi::Object exports);
void RegisterKvmSystem(Napi::Env env, Napi::Object exports);
void RegisterKvmVm(Napi::Env env, Napi::Object exports);
void RegisterKvmVcpu(Napi::Env env, Napi::Object exports);
void RegisterTun(Napi::Env env, Napi::Object exports);
void RegisterFdPoll(Napi::Env env, Napi::Object exports);
void RegisterSockets(Napi::Env env, Napi::Object exports);
void RegisterBench(Napi::Env env, Napi::Object exports);

}  // namespace tsvmm
