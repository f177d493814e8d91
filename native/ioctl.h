// The ioctl(2) helper and the one-line wrapper shapes shared by the kvm_*.cc files.
//
// The syscall name a failure reports is always the request macro stringified (#request), never a
// retyped string, so an error cannot name a different ioctl than the one that failed. Likewise a
// wrapper's JS name is its C++ identifier (see EXPORT_FUNCTION).
#pragma once

#include <sys/ioctl.h>

#include <cerrno>
#include <cstddef>

#include "addon.h"
#include "args.h"

namespace tsvmm {

// ioctl(fd, request, arg); on failure throws a KvmError named `request_name` and returns false.
template <typename Arg>
bool Ioctl(Napi::Env env, int fd, unsigned long request, const char* request_name, Arg arg,
           int* result = nullptr) {
  int ret = ::ioctl(fd, request, arg);
  if (ret < 0) {
    ThrowSyscallError(env, request_name, errno);
    return false;
  }
  if (result != nullptr) *result = ret;
  return true;
}

#define IOCTL(env, fd, request, ...) ::tsvmm::Ioctl(env, fd, request, #request, __VA_ARGS__)

// For the few call sites that must look at errno themselves (KVM_RUN's EINTR).
#define REQUEST_NAME(request) #request

// The size of a <linux/kvm.h> struct up to and including `last_field`. Structs ending in
// __DECLARE_FLEX_ARRAY must be measured this way: in C++ that macro's empty struct takes a byte, so
// sizeof (and the flexible array's offset) differ from the C layout the kernel uses.
#define SIZE_THROUGH(type, last_field) \
  (offsetof(type, last_field) + sizeof(static_cast<type*>(nullptr)->last_field))

// `request` with its _IOC size field set to `size`. An ioctl number encodes sizeof(its struct), so the
// C++ sizeof skew above also corrupts KVM_GET_XSAVE, KVM_GET_MSRS, KVM_SET_CPUID2 and the other
// requests on flexible-array structs (e.g. 0x9004aea4 instead of 0x9000aea4, which the kernel
// rejects); recomputing the field from the C size makes the number right with any header version.
constexpr unsigned long WithArgSize(unsigned long request, size_t size) {
  return (request & ~(static_cast<unsigned long>(_IOC_SIZEMASK) << _IOC_SIZESHIFT)) |
         (static_cast<unsigned long>(size) << _IOC_SIZESHIFT);
}

// What a wrapper over a counted struct returns.
enum class CountedResult {
  kNothing,       // undefined
  kIoctlResult,   // the ioctl's return value (KVM_GET_MSRS: MSRs processed)
  kHeaderCount,   // the u32 count the kernel wrote back into the header
};

// fn(fd, buf): ioctl(fd, request, buf) with `buf` at least `size` bytes; returns undefined.
Napi::Value IoctlBuffer(const Napi::CallbackInfo& info, const char* function,
                        unsigned long request, const char* request_name, size_t size);
// fn(fd, buf): ioctl(fd, request, buf) on a struct with a u32 count header and `entry` sized entries.
Napi::Value IoctlCounted(const Napi::CallbackInfo& info, const char* function,
                         unsigned long request, const char* request_name, size_t header,
                         size_t entry, CountedResult result);
// fn(fd): ioctl(fd, request, 0); returns the ioctl's result.
Napi::Value IoctlNoArg(const Napi::CallbackInfo& info, const char* function,
                       unsigned long request, const char* request_name);
// fn(fd, value): ioctl(fd, request, value) for a u32 passed by value; returns the ioctl's result.
Napi::Value IoctlValue(const Napi::CallbackInfo& info, const char* function,
                       unsigned long request, const char* request_name, const char* value_name);

#define IOCTL_BUFFER(fn, request, size)                                                   \
  Napi::Value fn(const Napi::CallbackInfo& info) {                                        \
    return ::tsvmm::IoctlBuffer(info, #fn, ::tsvmm::WithArgSize(request, size), #request, \
                                size);                                                    \
  }

#define IOCTL_COUNTED(fn, request, header_size, entry_size, result)                       \
  Napi::Value fn(const Napi::CallbackInfo& info) {                                        \
    return ::tsvmm::IoctlCounted(info, #fn, ::tsvmm::WithArgSize(request, header_size),   \
                                 #request, header_size, entry_size,                       \
                                 ::tsvmm::CountedResult::result);                         \
  }

#define IOCTL_NOARG(fn, request)                              \
  Napi::Value fn(const Napi::CallbackInfo& info) {            \
    return ::tsvmm::IoctlNoArg(info, #fn, request, #request); \
  }

#define IOCTL_VALUE(fn, request, value_name)                               \
  Napi::Value fn(const Napi::CallbackInfo& info) {                         \
    return ::tsvmm::IoctlValue(info, #fn, request, #request, #value_name); \
  }

}  // namespace tsvmm
