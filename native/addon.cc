// Module registration and the error helper.
#include "addon.h"

#include <string>

namespace tsvmm {

AddonInstance::AddonInstance(Napi::Env env, Napi::Object exports) {
  // Enumerable like the free functions below, so Object.keys lists the whole surface.
  DefineAddon(exports, {InstanceMethod<&AddonInstance::SetErrorConstructor>("setErrorConstructor",
                                                                           napi_default_jsproperty)});
  RegisterFds(env, exports);
  RegisterMemory(env, exports);
  RegisterBitmap(env, exports);
  RegisterPages(env, exports);
  RegisterThreads(env, exports);
  RegisterKvmSystem(env, exports);
  RegisterKvmVm(env, exports);
  RegisterKvmVcpu(env, exports);
  RegisterTun(env, exports);
  RegisterFdPoll(env, exports);
  RegisterSockets(env, exports);
  RegisterBench(env, exports);
}

Napi::Value AddonInstance::SetErrorConstructor(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsFunction()) {
    Napi::TypeError::New(env, "setErrorConstructor: argument ctor must be a function")
        .ThrowAsJavaScriptException();
    return {};
  }
  error_constructor = Napi::Persistent(info[0].As<Napi::Function>());
  return env.Undefined();
}

Napi::Value ThrowSyscallError(Napi::Env env, const char* syscall, int err) {
  AddonInstance* instance = env.GetInstanceData<AddonInstance>();
  if (instance == nullptr || instance->error_constructor.IsEmpty()) {
    // Nothing structured to throw yet; still say which call failed rather than lose it.
    Napi::Error::New(env, std::string(syscall) + " failed with errno " + std::to_string(err) +
                              " (setErrorConstructor was not called)")
        .ThrowAsJavaScriptException();
    return {};
  }
  Napi::Object error = instance->error_constructor.New(
      {Napi::String::New(env, syscall), Napi::Number::New(env, err)});
  // If the constructor itself threw, that exception is already pending and is what the caller sees.
  if (!env.IsExceptionPending()) Napi::Error(env, error).ThrowAsJavaScriptException();
  return {};
}

}  // namespace tsvmm

// NODE_API_ADDON pastes the class name into an identifier, so it must be unqualified.
using tsvmm::AddonInstance;
NODE_API_ADDON(AddonInstance)
