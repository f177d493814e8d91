// Whether a run of bytes is all zero: the scan under both bitmap and page bulk helpers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace tsvmm {

// Four 64-bit lanes per step (the compiler keeps them in vector registers), read through memcpy so
// `p` may have any alignment. A plain read: a concurrent writer's bytes may be missed, which the
// callers allow (see bitmap.cc).
inline bool AllZeroBytes(const void* p, size_t n) {
  const uint8_t* b = static_cast<const uint8_t*>(p);
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    uint64_t q[4];
    std::memcpy(q, b + i, sizeof q);
    if ((q[0] | q[1] | q[2] | q[3]) != 0) return false;
  }
  for (; i < n; ++i) {
    if (b[i] != 0) return false;
  }
  return true;
}

}  // namespace tsvmm
