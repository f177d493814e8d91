// Plain file descriptors: /dev/kvm itself, eventfds for irqfd/ioeventfd.
#include <fcntl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "addon.h"
#include "args.h"

namespace tsvmm {
namespace {

Napi::Value open(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  std::string path;
  if (!args.String(0, "path", &path)) return {};
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return ThrowSyscallError(args.Env(), "open", errno);
  return Napi::Number::New(args.Env(), fd);
}

Napi::Value close(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  int32_t fd;
  if (!args.Int32(0, "fd", &fd)) return {};
  // Not retried on EINTR: on Linux the fd is released even then, and a retry could close a reused fd.
  if (::close(fd) != 0) return ThrowSyscallError(args.Env(), "close", errno);
  return args.Env().Undefined();
}

Napi::Value eventfd(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  uint32_t initval, flags;
  if (!args.Uint32(0, "initval", &initval) || !args.Uint32(1, "flags", &flags)) return {};
  int fd = ::eventfd(initval, static_cast<int>(flags));
  if (fd < 0) return ThrowSyscallError(args.Env(), "eventfd", errno);
  return Napi::Number::New(args.Env(), fd);
}

}  // namespace

void RegisterFds(Napi::Env env, Napi::Object exports) {
  EXPORT_FUNCTION(env, exports, open);
  EXPORT_FUNCTION(env, exports, close);
  EXPORT_FUNCTION(env, exports, eventfd);
}

}  // namespace tsvmm
