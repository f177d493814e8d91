#include "fast-call.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

namespace tsvmm {

namespace {

// Inside node a napi_value is a v8::Local<v8::Value> (node's js_native_api_v8.h converts between
// the two by copying the pointer), so a function made through V8 is handed to N-API by one memcpy.
static_assert(sizeof(napi_value) == sizeof(v8::Local<v8::Value>));

napi_value ToNapi(v8::Local<v8::Value> local) {
  napi_value value;
  std::memcpy(&value, static_cast<void*>(&local), sizeof(value));
  return value;
}

}  // namespace

void ExportFastFunction(Napi::Env env, Napi::Object exports, const char* name, int length,
                        v8::FunctionCallback slow, const v8::CFunction* fast) {
  v8::Isolate* isolate = v8::Isolate::GetCurrent();
  v8::Local<v8::Context> context = isolate->GetCurrentContext();
  // No receiver check (empty signature): the addon's exports object is the usual receiver, and the
  // wrappers do not look at it.
  v8::Local<v8::FunctionTemplate> tmpl = v8::FunctionTemplate::New(
      isolate, slow, v8::Local<v8::Value>(), v8::Local<v8::Signature>(), length,
      v8::ConstructorBehavior::kThrow, v8::SideEffectType::kHasSideEffect, fast);
  v8::Local<v8::String> js_name = v8::String::NewFromUtf8(isolate, name).ToLocalChecked();
  tmpl->SetClassName(js_name);
  v8::Local<v8::Function> function = tmpl->GetFunction(context).ToLocalChecked();
  function->SetName(js_name);
  exports.Set(name, Napi::Value(env, ToNapi(function)));
}

bool FastArgInt32(const v8::FunctionCallbackInfo<v8::Value>& info, const char* function, int index,
                  const char* name, int32_t* out) {
  v8::Isolate* isolate = info.GetIsolate();
  v8::Local<v8::Value> value = info[index];
  std::string message = std::string(function) + ": argument " + name;
  if (!value->IsNumber()) {
    message += " must be a number";
    isolate->ThrowException(
        v8::Exception::TypeError(v8::String::NewFromUtf8(isolate, message.c_str()).ToLocalChecked()));
    return false;
  }
  double number = value.As<v8::Number>()->Value();
  if (std::trunc(number) != number || number < INT32_MIN || number > INT32_MAX) {
    message += " must be an int32";
    isolate->ThrowException(
        v8::Exception::RangeError(v8::String::NewFromUtf8(isolate, message.c_str()).ToLocalChecked()));
    return false;
  }
  *out = static_cast<int32_t>(number);
  return true;
}

}  // namespace tsvmm
