// XXH3-64 (Yann Collet's xxHash 3, 64-bit result, seed 0, the default secret), streaming, written
// from xxHash's own specification (doc/xxhash_spec.md). The migration stream's checksum: XXH64 cost
// each side of a migration as much CPU as a copy of the bytes (its two 64-bit multiplies per 8 bytes
// bound it at ~11 GB/s here); XXH3 does one 32x32->64 multiply per 8 bytes, two at a time in SSE2,
// which every x86-64 has, or four at a time in AVX2 where the CPU has it (chosen at run time).
//
// Inputs of up to 240 bytes are hashed whole at the digest (they fit the state's buffer); longer ones
// run through eight accumulators, a 64-byte stripe at a time and a scramble every 16 stripes (a
// 1 KiB block), and the digest treats the last 64 bytes of input as a final stripe.
#pragma once

#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "zero.h"  // Load64

namespace tsvmm {
namespace xxh3 {

constexpr uint64_t kPrime32_1 = 0x9E3779B1U;
constexpr uint64_t kPrime32_2 = 0x85EBCA77U;
constexpr uint64_t kPrime32_3 = 0xC2B2AE3DU;
constexpr uint64_t kPrime64_1 = 0x9E3779B185EBCA87ULL;
constexpr uint64_t kPrime64_2 = 0xC2B2AE3D27D4EB4FULL;
constexpr uint64_t kPrime64_3 = 0x165667B19E3779F9ULL;
constexpr uint64_t kPrime64_4 = 0x85EBCA77C2B2AE63ULL;
constexpr uint64_t kPrime64_5 = 0x27D4EB2F165667C5ULL;
constexpr uint64_t kPrimeMx1 = 0x165667919E3779F9ULL;
constexpr uint64_t kPrimeMx2 = 0x9FB21C651E98DF25ULL;

constexpr size_t kSecretBytes = 192;
constexpr size_t kStripeBytes = 64;
constexpr size_t kStripesPerBlock = (kSecretBytes - kStripeBytes) / 8;  // 16
constexpr size_t kBufferBytes = 256;                                    // four stripes
constexpr size_t kMidMaxBytes = 240;

alignas(16) constexpr uint8_t kSecret[kSecretBytes] = {
    0xb8, 0xfe, 0x6c, 0x39, 0x23, 0xa4, 0x4b, 0xbe, 0x7c, 0x01, 0x81, 0x2c, 0xf7, 0x21, 0xad, 0x1c,
    0xde, 0xd4, 0x6d, 0xe9, 0x83, 0x90, 0x97, 0xdb, 0x72, 0x40, 0xa4, 0xa4, 0xb7, 0xb3, 0x67, 0x1f,
    0xcb, 0x79, 0xe6, 0x4e, 0xcc, 0xc0, 0xe5, 0x78, 0x82, 0x5a, 0xd0, 0x7d, 0xcc, 0xff, 0x72, 0x21,
    0xb8, 0x08, 0x46, 0x74, 0xf7, 0x43, 0x24, 0x8e, 0xe0, 0x35, 0x90, 0xe6, 0x81, 0x3a, 0x26, 0x4c,
    0x3c, 0x28, 0x52, 0xbb, 0x91, 0xc3, 0x00, 0xcb, 0x88, 0xd0, 0x65, 0x8b, 0x1b, 0x53, 0x2e, 0xa3,
    0x71, 0x64, 0x48, 0x97, 0xa2, 0x0d, 0xf9, 0x4e, 0x38, 0x19, 0xef, 0x46, 0xa9, 0xde, 0xac, 0xd8,
    0xa8, 0xfa, 0x76, 0x3f, 0xe3, 0x9c, 0x34, 0x3f, 0xf9, 0xdc, 0xbb, 0xc7, 0xc7, 0x0b, 0x4f, 0x1d,
    0x8a, 0x51, 0xe0, 0x4b, 0xcd, 0xb4, 0x59, 0x31, 0xc8, 0x9f, 0x7e, 0xc9, 0xd9, 0x78, 0x73, 0x64,
    0xea, 0xc5, 0xac, 0x83, 0x34, 0xd3, 0xeb, 0xc3, 0xc5, 0x81, 0xa0, 0xff, 0xfa, 0x13, 0x63, 0xeb,
    0x17, 0x0d, 0xdd, 0x51, 0xb7, 0xf0, 0xda, 0x49, 0xd3, 0x16, 0x55, 0x26, 0x29, 0xd4, 0x68, 0x9e,
    0x2b, 0x16, 0xbe, 0x58, 0x7d, 0x47, 0xa1, 0xfc, 0x8f, 0xf8, 0xb8, 0xd1, 0x7a, 0xd0, 0x31, 0xce,
    0x45, 0xcb, 0x3a, 0x8f, 0x95, 0x16, 0x04, 0x28, 0xaf, 0xd7, 0xfb, 0xca, 0xbb, 0x4b, 0x40, 0x7e,
};

// The running state, kept by the caller in a Uint8Array of kStateBytes. All zero means nothing fed
// yet (`started` 0: the accumulators get their initial values on the first update), so a fresh
// Uint8Array is a valid start.
struct State {
  uint64_t acc[8];
  uint64_t total;       // bytes fed
  uint32_t stripes;     // stripes accumulated into the current block, < kStripesPerBlock
  uint32_t buffered;    // bytes in buffer[0..buffered), <= kBufferBytes
  uint32_t started;     // 0 or kStarted
  uint32_t reserved;
  // Input not yet accumulated. INVARIANT: once a stripe has been accumulated, the last 64 bytes
  // accumulated are at buffer[kBufferBytes - 64, kBufferBytes) whenever buffered < 64, as the final
  // stripe (the input's last 64 bytes) may need them.
  uint8_t buffer[kBufferBytes];
};
constexpr size_t kStateBytes = sizeof(State);
static_assert(kStateBytes == 344, "the TypeScript side allocates this many bytes");
constexpr uint32_t kStarted = 0x58583348;  // "H3XX"

// Whether `s` is a state this code made (or a zeroed one).
inline bool Valid(const State& s) {
  return (s.started == 0 || s.started == kStarted) && s.buffered <= kBufferBytes &&
         s.stripes < kStripesPerBlock;
}

inline uint32_t Read32(const uint8_t* p) { uint32_t v; std::memcpy(&v, p, 4); return v; }
inline uint64_t Rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
inline uint64_t Mul128Fold(uint64_t a, uint64_t b) {
  unsigned __int128 m = static_cast<unsigned __int128>(a) * b;
  return static_cast<uint64_t>(m) ^ static_cast<uint64_t>(m >> 64);
}
inline uint64_t Avalanche(uint64_t x) {
  x ^= x >> 37;
  x *= kPrimeMx1;
  return x ^ (x >> 32);
}
inline uint64_t AvalancheXxh64(uint64_t x) {
  x ^= x >> 33;
  x *= kPrime64_2;
  x ^= x >> 29;
  x *= kPrime64_3;
  return x ^ (x >> 32);
}

// One 64-byte stripe into the accumulators, with the secret from `secret`: per lane i,
// acc[i ^ 1] += data[i]; acc[i] += lo32(data[i] ^ key[i]) * hi32(data[i] ^ key[i]).
inline void Accumulate(uint64_t acc[8], const uint8_t* stripe, const uint8_t* secret) {
  __m128i* a = reinterpret_cast<__m128i*>(acc);
  for (int i = 0; i < 4; ++i) {
    __m128i data = _mm_loadu_si128(reinterpret_cast<const __m128i*>(stripe) + i);
    __m128i key = _mm_loadu_si128(reinterpret_cast<const __m128i*>(secret) + i);
    __m128i data_key = _mm_xor_si128(data, key);
    __m128i data_key_hi = _mm_shuffle_epi32(data_key, _MM_SHUFFLE(0, 3, 0, 1));
    __m128i product = _mm_mul_epu32(data_key, data_key_hi);
    __m128i swapped = _mm_shuffle_epi32(data, _MM_SHUFFLE(1, 0, 3, 2));
    __m128i sum = _mm_add_epi64(_mm_loadu_si128(a + i), swapped);
    _mm_storeu_si128(a + i, _mm_add_epi64(product, sum));
  }
}

// After each full block: acc[i] = (acc[i] ^ (acc[i] >> 47) ^ key[i]) * PRIME32_1, with the
// secret's last 64 bytes.
inline void Scramble(uint64_t acc[8]) {
  const uint8_t* key = kSecret + kSecretBytes - kStripeBytes;
  for (int i = 0; i < 8; ++i) {
    uint64_t a = acc[i];
    a ^= a >> 47;
    a ^= Load64(key + 8 * i);
    acc[i] = a * kPrime32_1;
  }
}

// Accumulate for `n` stripes, the block's scrambles included, four lanes per instruction
// (_mm256_shuffle_epi32 works within each 128-bit half, as Accumulate's SSE2 code does on each), the
// accumulators kept in registers across the run: through memory on every stripe, each load waiting
// for the store before it, this ran at 16 GiB/s over cached 1 MiB records here, like SSE2 (18),
// and in registers at 29-40.
__attribute__((target("avx2"))) inline void ConsumeStripesAvx2(uint64_t acc[8], uint32_t* stripes, const uint8_t* p, size_t n) {
  __m256i a[2];
  for (int i = 0; i < 2; ++i) a[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc) + i);
  for (size_t s = 0; s < n; ++s) {
    const __m256i* data = reinterpret_cast<const __m256i*>(p + s * kStripeBytes);
    const __m256i* key = reinterpret_cast<const __m256i*>(kSecret + *stripes * 8);
    for (int i = 0; i < 2; ++i) {
      __m256i d = _mm256_loadu_si256(data + i);
      __m256i dk = _mm256_xor_si256(d, _mm256_loadu_si256(key + i));
      __m256i product = _mm256_mul_epu32(dk, _mm256_shuffle_epi32(dk, _MM_SHUFFLE(0, 3, 0, 1)));
      a[i] = _mm256_add_epi64(_mm256_add_epi64(a[i], _mm256_shuffle_epi32(d, _MM_SHUFFLE(1, 0, 3, 2))), product);
    }
    if (++*stripes == kStripesPerBlock) {
      for (int i = 0; i < 2; ++i) _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc) + i, a[i]);
      Scramble(acc);
      for (int i = 0; i < 2; ++i) a[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc) + i);
      *stripes = 0;
    }
  }
  for (int i = 0; i < 2; ++i) _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc) + i, a[i]);
}

inline bool HasAvx2() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0;
  }();
  return has;
}

// `n` stripes from `p` into the accumulators, continuing the block at `*stripes`.
inline void ConsumeStripes(uint64_t acc[8], uint32_t* stripes, const uint8_t* p, size_t n) {
  if (HasAvx2()) {
    ConsumeStripesAvx2(acc, stripes, p, n);
    return;
  }
  for (size_t i = 0; i < n; ++i) {
    Accumulate(acc, p + i * kStripeBytes, kSecret + *stripes * 8);
    if (++*stripes == kStripesPerBlock) {
      Scramble(acc);
      *stripes = 0;
    }
  }
}

inline void Start(State* s) {
  static constexpr uint64_t kInit[8] = {kPrime32_3, kPrime64_1, kPrime64_2, kPrime64_3,
                                        kPrime64_4, kPrime32_2, kPrime64_5, kPrime32_1};
  std::memcpy(s->acc, kInit, sizeof kInit);
  s->started = kStarted;
}

inline void Update(State* s, const uint8_t* p, size_t n) {
  if (s->started == 0) Start(s);
  s->total += n;
  // While everything fits the buffer, it waits there: up to 240 bytes hash whole at the digest, and
  // the input's last bytes are never accumulated before the digest.
  if (s->buffered + n <= kBufferBytes) {
    std::memcpy(s->buffer + s->buffered, p, n);
    s->buffered += static_cast<uint32_t>(n);
    return;
  }
  if (s->buffered > 0) {
    size_t fill = kBufferBytes - s->buffered;
    std::memcpy(s->buffer + s->buffered, p, fill);
    p += fill;
    n -= fill;
    ConsumeStripes(s->acc, &s->stripes, s->buffer, kBufferBytes / kStripeBytes);
    s->buffered = 0;  // buffer[192, 256), the last stripe accumulated, stays (INVARIANT)
  }
  // n > 0 here. Stripes straight from the input, keeping 1 to 256 bytes for the buffer.
  if (n > kBufferBytes) {
    size_t stripes = (n - 1) / kStripeBytes;  // leaves 1 to 64 bytes
    ConsumeStripes(s->acc, &s->stripes, p, stripes);
    p += stripes * kStripeBytes;
    n -= stripes * kStripeBytes;
    std::memcpy(s->buffer + kBufferBytes - kStripeBytes, p - kStripeBytes, kStripeBytes);
  }
  std::memcpy(s->buffer, p, n);
  s->buffered = static_cast<uint32_t>(n);
}

inline uint64_t MixStep(const uint8_t* data, const uint8_t* secret) {
  return Mul128Fold(Load64(data) ^ Load64(secret), Load64(data + 8) ^ Load64(secret + 8));
}

// The whole-input algorithms for 0 to 240 bytes (seed 0).
inline uint64_t HashShort(const uint8_t* in, size_t len) {
  const uint8_t* k = kSecret;
  if (len == 0) return AvalancheXxh64(Load64(k + 56) ^ Load64(k + 64));
  if (len <= 3) {
    uint32_t combined = static_cast<uint32_t>(in[len - 1]) | (static_cast<uint32_t>(len) << 8) |
                        (static_cast<uint32_t>(in[0]) << 16) | (static_cast<uint32_t>(in[len >> 1]) << 24);
    uint64_t value = static_cast<uint64_t>(Read32(k) ^ Read32(k + 4)) ^ combined;
    return AvalancheXxh64(value);
  }
  if (len <= 8) {
    uint64_t combined = static_cast<uint64_t>(Read32(in + len - 4)) | (static_cast<uint64_t>(Read32(in)) << 32);
    uint64_t value = (Load64(k + 8) ^ Load64(k + 16)) ^ combined;
    value ^= Rotl64(value, 49) ^ Rotl64(value, 24);
    value *= kPrimeMx2;
    value ^= (value >> 35) + len;
    value *= kPrimeMx2;
    return value ^ (value >> 28);
  }
  if (len <= 16) {
    uint64_t low = (Load64(k + 24) ^ Load64(k + 32)) ^ Load64(in);
    uint64_t high = (Load64(k + 40) ^ Load64(k + 48)) ^ Load64(in + len - 8);
    uint64_t value = len + __builtin_bswap64(low) + high + Mul128Fold(low, high);
    return Avalanche(value);
  }
  uint64_t acc = len * kPrime64_1;
  if (len <= 128) {
    for (int i = static_cast<int>((len - 1) >> 5); i >= 0; --i) {
      acc += MixStep(in + 16 * i, k + 32 * i);
      acc += MixStep(in + len - 16 * i - 16, k + 32 * i + 16);
    }
    return Avalanche(acc);
  }
  for (size_t i = 0; i < 8; ++i) acc += MixStep(in + 16 * i, k + 16 * i);
  acc = Avalanche(acc);
  for (size_t i = 8; i < (len >> 4); ++i) acc += MixStep(in + 16 * i, k + 16 * (i - 8) + 3);
  acc += MixStep(in + len - 16, k + 119);
  return Avalanche(acc);
}

// The hash of everything fed; `s` is left as it was.
inline uint64_t Digest(const State& s) {
  if (s.total <= kMidMaxBytes) return HashShort(s.buffer, static_cast<size_t>(s.total));
  uint64_t acc[8];
  std::memcpy(acc, s.acc, sizeof acc);
  uint32_t stripes = s.stripes;
  uint8_t last[kStripeBytes];
  if (s.buffered >= kStripeBytes) {
    ConsumeStripes(acc, &stripes, s.buffer, (s.buffered - 1) / kStripeBytes);
    std::memcpy(last, s.buffer + s.buffered - kStripeBytes, kStripeBytes);
  } else {
    size_t before = kStripeBytes - s.buffered;  // from the last stripe accumulated (INVARIANT)
    std::memcpy(last, s.buffer + kBufferBytes - before, before);
    std::memcpy(last + before, s.buffer, s.buffered);
  }
  Accumulate(acc, last, kSecret + kSecretBytes - kStripeBytes - 7);
  uint64_t result = s.total * kPrime64_1;
  for (int i = 0; i < 4; ++i) {
    result += Mul128Fold(acc[2 * i] ^ Load64(kSecret + 11 + 16 * i), acc[2 * i + 1] ^ Load64(kSecret + 11 + 16 * i + 8));
  }
  return Avalanche(result);
}

}  // namespace xxh3
}  // namespace tsvmm
