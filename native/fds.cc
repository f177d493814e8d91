// Plain file descriptors: /dev/kvm itself, eventfds for irqfd/ioeventfd, tap devices, disk images,
// and the calls the virtio devices make on them (read/write, pread/pwrite, and the blk dataplane's poll).
#include <fcntl.h>
#include <poll.h>
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

// fcntl(fd, F_DUPFD_CLOEXEC, 0): a second fd on the same open file (for a socket, the same
// connection, which stays open until both are closed).
Napi::Value dup(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  int32_t fd;
  if (!args.Int32(0, "fd", &fd)) return {};
  int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) return ThrowSyscallError(args.Env(), "dup", errno);
  return Napi::Number::New(args.Env(), copy);
}

Napi::Value eventfd(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  uint32_t initval, flags;
  if (!args.Uint32(0, "initval", &initval) || !args.Uint32(1, "flags", &flags)) return {};
  int fd = ::eventfd(initval, static_cast<int>(flags));
  if (fd < 0) return ThrowSyscallError(args.Env(), "eventfd", errno);
  return Napi::Number::New(args.Env(), fd);
}

// read(fd, buf, buf.length); returns the byte count (a blocking read on the caller's thread).
Napi::Value read(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  int32_t fd;
  Bytes buf;
  if (!args.Int32(0, "fd", &fd) || !args.Uint8Array(1, "buf", 0, &buf)) return {};
  ssize_t n = ::read(fd, buf.data, buf.length);
  if (n < 0) return ThrowSyscallError(args.Env(), "read", errno);
  return Napi::Number::New(args.Env(), static_cast<double>(n));
}

// write(fd, buf, buf.length); returns the byte count.
Napi::Value write(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  int32_t fd;
  Bytes buf;
  if (!args.Int32(0, "fd", &fd) || !args.Uint8Array(1, "buf", 0, &buf)) return {};
  ssize_t n = ::write(fd, buf.data, buf.length);
  if (n < 0) return ThrowSyscallError(args.Env(), "write", errno);
  return Napi::Number::New(args.Env(), static_cast<double>(n));
}

// pread(fd, buf, buf.length, offset) and pwrite(...): positioned I/O on an image file, from the thread
// that serves the disk; offset is a byte offset below 2^53. Each returns the byte count (short counts
// are the caller's to continue).
Napi::Value pread(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  int32_t fd;
  Bytes buf;
  uint64_t offset;
  if (!args.Int32(0, "fd", &fd) || !args.Uint8Array(1, "buf", 0, &buf) || !args.SafeUint(2, "offset", &offset)) return {};
  ssize_t n = ::pread(fd, buf.data, buf.length, static_cast<off_t>(offset));
  if (n < 0) return ThrowSyscallError(args.Env(), "pread", errno);
  return Napi::Number::New(args.Env(), static_cast<double>(n));
}

Napi::Value pwrite(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  int32_t fd;
  Bytes buf;
  uint64_t offset;
  if (!args.Int32(0, "fd", &fd) || !args.Uint8Array(1, "buf", 0, &buf) || !args.SafeUint(2, "offset", &offset)) return {};
  ssize_t n = ::pwrite(fd, buf.data, buf.length, static_cast<off_t>(offset));
  if (n < 0) return ThrowSyscallError(args.Env(), "pwrite", errno);
  return Napi::Number::New(args.Env(), static_cast<double>(n));
}

// poll(fds, nfds, timeout): `fds` holds struct pollfd entries (8 bytes each) laid out by the caller;
// the kernel fills in revents. Returns the number of ready entries (0 on timeout).
Napi::Value poll(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  Bytes fds;
  int32_t timeout_ms;
  if (!args.Uint8Array(0, "fds", sizeof(struct pollfd), &fds) ||
      !args.Int32(1, "timeoutMs", &timeout_ms)) {
    return {};
  }
  int n = ::poll(reinterpret_cast<struct pollfd*>(fds.data), fds.length / sizeof(struct pollfd),
                 timeout_ms);
  if (n < 0) return ThrowSyscallError(args.Env(), "poll", errno);
  return Napi::Number::New(args.Env(), n);
}

}  // namespace

void RegisterFds(Napi::Env env, Napi::Object exports) {
  EXPORT_FUNCTION(env, exports, open);
  EXPORT_FUNCTION(env, exports, close);
  EXPORT_FUNCTION(env, exports, dup);
  EXPORT_FUNCTION(env, exports, eventfd);
  EXPORT_FUNCTION(env, exports, read);
  EXPORT_FUNCTION(env, exports, write);
  EXPORT_FUNCTION(env, exports, pread);
  EXPORT_FUNCTION(env, exports, pwrite);
  EXPORT_FUNCTION(env, exports, poll);
}

}  // namespace tsvmm
