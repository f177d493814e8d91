// Datagram sockets for the virtio-net udp backend, one wrapper per system call. Addresses cross as
// the caller's struct sockaddr bytes (sockaddr_in or sockaddr_in6, laid out in TypeScript), so no
// name resolution or address policy lives here. Datagrams are received with read(2) (fds.cc).
#include <sys/socket.h>

#include <cerrno>

#include "addon.h"
#include "args.h"

namespace tsvmm {
namespace {

// socket(domain, type, protocol): type may carry SOCK_NONBLOCK | SOCK_CLOEXEC. Returns the fd.
Napi::Value socket(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  int32_t domain, type, protocol;
  if (!args.Int32(0, "domain", &domain) || !args.Int32(1, "type", &type) || !args.Int32(2, "protocol", &protocol)) return {};
  int fd = ::socket(domain, type, protocol);
  if (fd < 0) return ThrowSyscallError(args.Env(), "socket", errno);
  return Napi::Number::New(args.Env(), fd);
}

// bind(fd, addr, addr.length).
Napi::Value bind(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  int32_t fd;
  Bytes addr;
  if (!args.Int32(0, "fd", &fd) || !args.Uint8Array(1, "addr", sizeof(sa_family_t), &addr)) return {};
  if (::bind(fd, reinterpret_cast<const struct sockaddr*>(addr.data), addr.length) != 0) {
    return ThrowSyscallError(args.Env(), "bind", errno);
  }
  return args.Env().Undefined();
}

// sendto(fd, buf, buf.length, 0, addr, addr.length); returns the byte count.
Napi::Value sendto(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  int32_t fd;
  Bytes buf, addr;
  if (!args.Int32(0, "fd", &fd) || !args.Uint8Array(1, "buf", 0, &buf) ||
      !args.Uint8Array(2, "addr", sizeof(sa_family_t), &addr)) {
    return {};
  }
  ssize_t n = ::sendto(fd, buf.data, buf.length, 0, reinterpret_cast<const struct sockaddr*>(addr.data), addr.length);
  if (n < 0) return ThrowSyscallError(args.Env(), "sendto", errno);
  return Napi::Number::New(args.Env(), static_cast<double>(n));
}

// setsockopt(fd, level, name, &value, sizeof(int)) for the options that take an int.
Napi::Value setsockoptInt(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  int32_t fd, level, name, value;
  if (!args.Int32(0, "fd", &fd) || !args.Int32(1, "level", &level) || !args.Int32(2, "name", &name) ||
      !args.Int32(3, "value", &value)) {
    return {};
  }
  int v = value;
  if (::setsockopt(fd, level, name, &v, sizeof v) != 0) return ThrowSyscallError(args.Env(), "setsockopt", errno);
  return args.Env().Undefined();
}

}  // namespace

void RegisterSockets(Napi::Env env, Napi::Object exports) {
  EXPORT_FUNCTION(env, exports, socket);
  EXPORT_FUNCTION(env, exports, bind);
  EXPORT_FUNCTION(env, exports, sendto);
  EXPORT_FUNCTION(env, exports, setsockoptInt);
}

}  // namespace tsvmm
