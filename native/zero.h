// Whether a run of bytes is all zero: the scan under both bitmap and page bulk helpers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace tsvmm {

// An unaligned 64-bit read (memcpy: `p` may have any alignment; it compiles to one mov).
inline uint64_t Load64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Four 64-bit reads ORed per 32 bytes, in general registers. A plain read: a concurrent writer's
// bytes may be missed, which the callers allow (see bitmap.cc). Not one memcpy into a uint64_t[4]:
// GCC built that as two SSE loads stored to the stack and four loads back, which QEMU's TCG (nested
// KVM here) ran at half the speed of these plain loads; natively the two are alike.
inline bool AllZeroBytes(const void* p, size_t n) {
  const uint8_t* b = static_cast<const uint8_t*>(p);
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    if ((Load64(b + i) | Load64(b + i + 8) | Load64(b + i + 16) | Load64(b + i + 24)) != 0) return false;
  }
  for (; i < n; ++i) {
    if (b[i] != 0) return false;
  }
  return true;
}

// Set bits of a word, inline: without -mpopcnt (the addon runs on any x86-64), __builtin_popcount
// is a call into libgcc through the PLT for every word.
inline unsigned Popcount64(uint64_t x) {
  x -= (x >> 1) & 0x5555555555555555ULL;
  x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
  x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0fULL;
  return static_cast<unsigned>((x * 0x0101010101010101ULL) >> 56);
}

// Set bits of n bytes at p (any alignment), skipping clean 256-byte stretches with AllZeroBytes.
inline uint64_t CountSetBits(const uint8_t* p, size_t n) {
  uint64_t bits = 0;
  size_t i = 0;
  for (; i + 256 <= n; i += 256) {
    if (AllZeroBytes(p + i, 256)) continue;
    for (size_t j = i; j < i + 256; j += 8) bits += Popcount64(Load64(p + j));
  }
  for (; i < n; ++i) bits += Popcount64(p[i]);
  return bits;
}

}  // namespace tsvmm
