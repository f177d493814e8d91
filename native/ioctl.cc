#include "ioctl.h"

#include <cstdint>
#include <cstring>

namespace tsvmm {

Napi::Value IoctlBuffer(const Napi::CallbackInfo& info, const char* function,
                        unsigned long request, const char* request_name, size_t size) {
  Args args(info, function);
  int32_t fd;
  Bytes buf;
  if (!args.Int32(0, "fd", &fd) || !args.Uint8Array(1, "buf", size, &buf)) return {};
  if (!Ioctl(args.Env(), fd, request, request_name, buf.data)) return {};
  return args.Env().Undefined();
}

Napi::Value IoctlCounted(const Napi::CallbackInfo& info, const char* function,
                         unsigned long request, const char* request_name, size_t header,
                         size_t entry, CountedResult result) {
  Args args(info, function);
  int32_t fd;
  Bytes buf;
  if (!args.Int32(0, "fd", &fd) || !args.CountedStruct(1, "buf", header, entry, &buf)) return {};
  int ret;
  if (!Ioctl(args.Env(), fd, request, request_name, buf.data, &ret)) return {};
  switch (result) {
    case CountedResult::kNothing:
      return args.Env().Undefined();
    case CountedResult::kIoctlResult:
      return Napi::Number::New(args.Env(), ret);
    case CountedResult::kHeaderCount: {
      uint32_t count;
      std::memcpy(&count, buf.data, sizeof count);
      return Napi::Number::New(args.Env(), count);
    }
  }
  return {};
}

Napi::Value IoctlNoArg(const Napi::CallbackInfo& info, const char* function,
                       unsigned long request, const char* request_name) {
  Args args(info, function);
  int32_t fd;
  if (!args.Int32(0, "fd", &fd)) return {};
  int ret;
  if (!Ioctl(args.Env(), fd, request, request_name, 0UL, &ret)) return {};
  return Napi::Number::New(args.Env(), ret);
}

Napi::Value IoctlValue(const Napi::CallbackInfo& info, const char* function,
                       unsigned long request, const char* request_name, const char* value_name) {
  Args args(info, function);
  int32_t fd;
  uint32_t value;
  if (!args.Int32(0, "fd", &fd) || !args.Uint32(1, value_name, &value)) return {};
  int ret;
  if (!Ioctl(args.Env(), fd, request, request_name, static_cast<unsigned long>(value), &ret)) {
    return {};
  }
  return Napi::Number::New(args.Env(), ret);
}

}  // namespace tsvmm
