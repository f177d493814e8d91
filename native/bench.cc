// The C baseline that bench/exit-latency compares the TypeScript exit path against. It must do no
// more work per exit than the minimum (KVM_RUN, two loads, a compare), or the comparison flatters
// TypeScript.
#include <linux/kvm.h>

#include <cstdint>

#include "ioctl.h"

namespace tsvmm {
namespace {

Napi::Value benchCountPioExits(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  int32_t fd;
  Napi::ArrayBuffer run_buffer;
  uint32_t port;
  if (!args.Int32(0, "vcpuFd", &fd) ||
      !args.ArrayBuffer(1, "run", sizeof(struct kvm_run), &run_buffer) ||
      !args.Uint32(2, "port", &port)) {
    return {};
  }
  const struct kvm_run* run = static_cast<const struct kvm_run*>(run_buffer.Data());
  uint64_t count = 0;
  for (;;) {
    if (::ioctl(fd, KVM_RUN, 0UL) != 0) {
      int err = errno;
      if (err == EINTR) break;
      return ThrowSyscallError(args.Env(), REQUEST_NAME(KVM_RUN), err);
    }
    if (run->exit_reason != KVM_EXIT_IO || run->io.port != port) break;
    ++count;
  }
  return Napi::Number::New(args.Env(), static_cast<double>(count));
}

}  // namespace

void RegisterBench(Napi::Env env, Napi::Object exports) {
  EXPORT_FUNCTION(env, exports, benchCountPioExits);
}

}  // namespace tsvmm
