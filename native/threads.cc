// Thread ids and signals: how another thread kicks a vCPU thread out of a blocking KVM_RUN.
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>

#include "addon.h"
#include "args.h"

namespace tsvmm {
namespace {

// Exists only so that the signal is caught (default action for real-time signals is to terminate)
// and the interrupted ioctl returns EINTR.
void EmptyHandler(int) {}

Napi::Value gettid(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), ::gettid());
}

Napi::Value tgkill(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  int32_t tid, signo;
  if (!args.Int32(0, "tid", &tid) || !args.Int32(1, "signo", &signo)) return {};
  if (::tgkill(::getpid(), tid, signo) != 0) return ThrowSyscallError(args.Env(), "tgkill", errno);
  return args.Env().Undefined();
}

// sched_yield(): lets another runnable thread of this CPU go first. Cannot fail on Linux.
Napi::Value schedYield(const Napi::CallbackInfo& info) {
  ::sched_yield();
  return info.Env().Undefined();
}

// A function, not a constant: glibc decides at run time how many real-time signals it reserves.
Napi::Value sigrtmin(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), SIGRTMIN);
}

// sa_flags = 0, deliberately without SA_RESTART: the point is that KVM_RUN returns EINTR.
Napi::Value installEmptySignalHandler(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  int32_t signo;
  if (!args.Int32(0, "signo", &signo)) return {};
  struct sigaction action = {};
  action.sa_handler = EmptyHandler;
  sigemptyset(&action.sa_mask);
  action.sa_flags = 0;
  if (::sigaction(signo, &action, nullptr) != 0) {
    return ThrowSyscallError(args.Env(), "sigaction", errno);
  }
  return args.Env().Undefined();
}

}  // namespace

void RegisterThreads(Napi::Env env, Napi::Object exports) {
  EXPORT_FUNCTION(env, exports, gettid);
  EXPORT_FUNCTION(env, exports, tgkill);
  EXPORT_FUNCTION(env, exports, schedYield);
  EXPORT_FUNCTION(env, exports, sigrtmin);
  EXPORT_FUNCTION(env, exports, installEmptySignalHandler);
}

}  // namespace tsvmm
