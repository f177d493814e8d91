// Argument decoding for the wrappers. A wrong argument is a bug in the caller, not a failed system
// call, so it throws a plain TypeError/RangeError naming the function and the argument.
#pragma once

#include <napi.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace tsvmm {

struct Bytes {
  uint8_t* data;
  size_t length;
};

class Args {
 public:
  // `function` is the wrapper's JS name; wrappers pass __func__, which is that name.
  Args(const Napi::CallbackInfo& info, const char* function) : info_(info), function_(function) {}

  Napi::Env Env() const { return info_.Env(); }

  // Each getter either stores the value and returns true, or throws and returns false.
  bool Int32(size_t index, const char* name, int32_t* out) const;  // fds, tids, signal numbers
  bool Uint32(size_t index, const char* name, uint32_t* out) const;
  bool SafeUint(size_t index, const char* name, uint64_t* out) const;  // a Number in [0, 2^53)
  // <linux/types.h> __u64 is unsigned long long while uint64_t is unsigned long; accept either.
  template <typename U64>
  bool BigUint64(size_t index, const char* name, U64* out) const {
    static_assert(sizeof(U64) == 8 && static_cast<U64>(-1) > 0, "needs an unsigned 64-bit out");
    uint64_t value;
    if (!BigUint64Value(index, name, &value)) return false;
    *out = value;
    return true;
  }
  bool String(size_t index, const char* name, std::string* out) const;
  bool Uint8Array(size_t index, const char* name, size_t min_length, Bytes* out) const;
  // An Int32Array or Uint32Array (a bitmap's words, possibly over a SharedArrayBuffer).
  bool Words32(size_t index, const char* name, uint32_t** out, size_t* count) const;
  // A struct starting with a u32 entry count (kvm_cpuid2, kvm_msrs, kvm_msr_list): the kernel
  // trusts that count, so the buffer must hold the header plus that many entries.
  bool CountedStruct(size_t index, const char* name, size_t header_size, size_t entry_size,
                     Bytes* out) const;
  bool ArrayBuffer(size_t index, const char* name, size_t min_length,
                   Napi::ArrayBuffer* out) const;
  bool BigUint64Array(size_t index, const char* name, size_t min_length,
                      Napi::BigUint64Array* out) const;

 private:
  Napi::Value At(size_t index) const { return info_[index]; }
  bool BigUint64Value(size_t index, const char* name, uint64_t* out) const;
  bool TypeError(const char* name, const char* expected) const;
  bool RangeError(const char* name, const std::string& problem) const;

  const Napi::CallbackInfo& info_;
  const char* function_;
};

}  // namespace tsvmm
