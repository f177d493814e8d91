// V8 fast API calls: a wrapper that TurboFan calls straight from optimized code as a plain C
// function, skipping the CallApiCallback builtin, N-API's callback wrapper and its argument
// conversions. Only for the hot path (KVM_RUN); everything else stays on N-API.
//
// A fast function must not allocate on the JS heap, throw or call into JS, so it returns what it
// found (an errno) and leaves the policy to TypeScript. Unoptimized callers reach the slow callback
// instead, which must behave the same (see ExportFastFunction).
#pragma once

#include <napi.h>
#include <v8.h>

#if __has_include(<v8-fast-api-calls.h>)
#include <v8-fast-api-calls.h>
#else
// Node 20's headers (V8 11.3) do not ship v8-fast-api-calls.h, although node exports what it needs:
//   v8::CFunctionInfo::CFunctionInfo(v8::CTypeInfo const&, unsigned int, v8::CTypeInfo const*)
//   v8::CFunction::CFunction(void const*, v8::CFunctionInfo const*)
// (nm -DC "$(command -v node)"). These are the declarations those symbols need, with V8 11.3's
// layouts, read back from node's own fast calls (the CTypeInfo arrays its builders store); only the
// constructors below are used, so the same code compiles against the real header where it exists.
#if V8_MAJOR_VERSION != 11 || V8_MINOR_VERSION != 3
#error "native/fast-call.h: this V8 lacks v8-fast-api-calls.h; its layouts must be checked anew"
#endif
namespace v8 {

class CTypeInfo {
 public:
  // The values V8 11.3 compiles against; only kInt32 and kV8Value are used here.
  enum class Type : uint8_t { kVoid = 0, kBool = 1, kInt32 = 3, kUint32 = 4, kV8Value = 10 };
  enum class Flags : uint8_t { kNone = 0 };
  explicit constexpr CTypeInfo(Type type, Flags flags = Flags::kNone)
      : type_(type), sequence_type_(0), flags_(flags) {}

 private:
  Type type_;
  uint8_t sequence_type_;  // kScalar
  Flags flags_;
};
static_assert(sizeof(CTypeInfo) == 3);

class V8_EXPORT CFunctionInfo {
 public:
  CFunctionInfo(const CTypeInfo& return_info, unsigned int arg_count, const CTypeInfo* arg_info);

 private:
  const CTypeInfo return_info_;
  const unsigned int arg_count_;
  const CTypeInfo* arg_info_;
};
static_assert(sizeof(CFunctionInfo) == 16);

class V8_EXPORT CFunction {
 public:
  CFunction(const void* address, const CFunctionInfo* type_info);

 private:
  const void* address_;
  const CFunctionInfo* type_info_;
};
static_assert(sizeof(CFunction) == 16);

}  // namespace v8
#endif

namespace tsvmm {

// exports[name] = a function whose unoptimized calls go to `slow` and whose calls from optimized
// code go to `fast`. The two must agree on every result; `fast` gets the receiver first.
void ExportFastFunction(Napi::Env env, Napi::Object exports, const char* name, int length,
                        v8::FunctionCallback slow, const v8::CFunction* fast);

// Args::Int32 for a slow callback: the same checks and messages. The fast path gets no such check
// (optimized code passes any Number truncated to int32), which only a caller's bug could tell apart.
bool FastArgInt32(const v8::FunctionCallbackInfo<v8::Value>& info, const char* function, int index,
                  const char* name, int32_t* out);

}  // namespace tsvmm
