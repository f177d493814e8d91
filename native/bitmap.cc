// Bulk helpers over dirty bitmaps (DESIGN, "The native boundary": pure, allocation-free helpers over
// buffers, here because bench/dirty-sync showed the JS loops dominate a sync). They decide nothing:
// which log goes where, and when, is MemslotMap's and DirtyTracker's business.
//
// Bit order is KVM's on little-endian x86: page i is bit (i % 32) of 32-bit word i / 32. The region
// bitmaps are shared with vCPU threads that mark pages with JS Atomics.or; the atomic builtins here
// are the same locked instructions, so every bit lands in exactly one take.
#include <cstdint>
#include <cstring>

#include "addon.h"
#include "args.h"
#include "zero.h"

namespace tsvmm {
namespace {

// A racing writer's bit may be missed by AllZeroBytes' plain read; it is then found by the next call,
// which is all a take or a fold promises.
bool AllZero(const void* p, size_t words) { return AllZeroBytes(p, words * 4); }

// bitmapOrLog(dst, firstPage, log, pages): ORs the first `pages` bits of `log` (a KVM dirty log, page
// 0 = bit 0) into `dst` starting at page `firstPage`, atomically per word. Returns whether any of
// those bits was set. A clean log costs one read-only scan.
Napi::Value bitmapOrLog(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  uint32_t* dst;
  size_t dst_words;
  uint32_t first_page, pages;
  Bytes log;
  if (!args.Words32(0, "dst", &dst, &dst_words) || !args.Uint32(1, "firstPage", &first_page) ||
      !args.Uint8Array(2, "log", 0, &log) || !args.Uint32(3, "pages", &pages)) {
    return {};
  }
  size_t words = (static_cast<size_t>(pages) + 31) / 32;
  if (words * 4 > log.length || static_cast<uint64_t>(first_page) + pages > dst_words * 32ULL) {
    Napi::RangeError::New(args.Env(), "bitmapOrLog: the log or its target lies outside its bitmap").ThrowAsJavaScriptException();
    return {};
  }
  // Read through memcpy: a Uint8Array may start at any byte.
  const uint8_t* src = log.data;
  const unsigned shift = first_page & 31;
  uint32_t* base = dst + (first_page >> 5);
  const uint32_t tail = pages % 32;
  bool any = false;
  const size_t CHUNK = 64;  // skip clean stretches with a wide read before looking word by word
  for (size_t start = 0; start < words; start += CHUNK) {
    size_t n = words - start < CHUNK ? words - start : CHUNK;
    if (AllZero(src + start * 4, n)) continue;
    for (size_t i = start; i < start + n; ++i) {
      uint32_t w;
      std::memcpy(&w, src + i * 4, 4);
      if (w == 0) continue;
      if (i == words - 1 && tail != 0) w &= (1u << tail) - 1;  // bits past the slot's end
      if (w == 0) continue;
      any = true;
      if (shift == 0) {
        __atomic_fetch_or(base + i, w, __ATOMIC_SEQ_CST);
      } else {
        __atomic_fetch_or(base + i, w << shift, __ATOMIC_SEQ_CST);
        uint32_t high = w >> (32 - shift);
        if (high != 0) __atomic_fetch_or(base + i + 1, high, __ATOMIC_SEQ_CST);
      }
    }
  }
  return Napi::Boolean::New(args.Env(), any);
}

// bitmapTake(src, dst): moves every set bit of `src` into `dst` (at least as long; every word of dst
// up to src's length is written, so a reused dst needs no clearing), clearing `src` word by word with
// an atomic exchange. Returns the number of pages taken.
Napi::Value bitmapTake(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  uint32_t *src, *dst;
  size_t src_words, dst_words;
  if (!args.Words32(0, "src", &src, &src_words) || !args.Words32(1, "dst", &dst, &dst_words)) return {};
  if (dst_words < src_words) {
    Napi::RangeError::New(args.Env(), "bitmapTake: dst is shorter than src").ThrowAsJavaScriptException();
    return {};
  }
  uint64_t pages = 0;
  const size_t CHUNK = 64;
  for (size_t start = 0; start < src_words; start += CHUNK) {
    size_t n = src_words - start < CHUNK ? src_words - start : CHUNK;
    if (AllZero(src + start, n)) {
      std::memset(dst + start, 0, n * 4);
      continue;
    }
    for (size_t i = start; i < start + n; ++i) {
      if (__atomic_load_n(src + i, __ATOMIC_RELAXED) == 0) {
        dst[i] = 0;
        continue;
      }
      uint32_t w = __atomic_exchange_n(src + i, 0u, __ATOMIC_SEQ_CST);
      dst[i] = w;
      pages += Popcount64(w);
    }
  }
  return Napi::Number::New(args.Env(), static_cast<double>(pages));
}

// bitmapTakeOr(src, dst): like bitmapTake, but ORs the taken bits into `dst` (at least as long)
// instead of overwriting it: dst already holds a sync's KVM logs, and the VMM's marks join them.
// Returns how many bits it set that were not set in dst already.
Napi::Value bitmapTakeOr(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  uint32_t *src, *dst;
  size_t src_words, dst_words;
  if (!args.Words32(0, "src", &src, &src_words) || !args.Words32(1, "dst", &dst, &dst_words)) return {};
  if (dst_words < src_words) {
    Napi::RangeError::New(args.Env(), "bitmapTakeOr: dst is shorter than src").ThrowAsJavaScriptException();
    return {};
  }
  uint64_t added = 0;
  const size_t CHUNK = 64;
  for (size_t start = 0; start < src_words; start += CHUNK) {
    size_t n = src_words - start < CHUNK ? src_words - start : CHUNK;
    if (AllZero(src + start, n)) continue;
    for (size_t i = start; i < start + n; ++i) {
      if (__atomic_load_n(src + i, __ATOMIC_RELAXED) == 0) continue;
      uint32_t w = __atomic_exchange_n(src + i, 0u, __ATOMIC_SEQ_CST);
      added += Popcount64(w & ~dst[i]);
      dst[i] |= w;
    }
  }
  return Napi::Number::New(args.Env(), static_cast<double>(added));
}

// bitmapCount(bitmap): the number of set bits (plain reads). A sync counts a result this way when a
// slot's log had to be ORed in rather than written in place (kvmGetDirtyLog counts the others).
Napi::Value bitmapCount(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  uint32_t* bits;
  size_t words;
  if (!args.Words32(0, "bitmap", &bits, &words)) return {};
  uint64_t n = CountSetBits(reinterpret_cast<const uint8_t*>(bits), words * 4);
  return Napi::Number::New(args.Env(), static_cast<double>(n));
}

// bitmapPages(bitmap, fromPage, out): writes the indices of the set bits of `bitmap` at or after
// page `fromPage`, ascending, into `out` until it is full. Returns how many it wrote; fewer than
// out.length means none is left. Plain reads: the caller owns `bitmap` (a sync's result), no writer
// races it. A migration's switch-over walks a whole region's bitmap this way, and the JS loop it
// replaces took 10-26 ms of downtime per walk of 1 GiB in nested KVM, interpreted on its first run.
Napi::Value bitmapPages(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  uint32_t *bits, *out;
  size_t words, out_length;
  uint32_t from_page;
  if (!args.Words32(0, "bitmap", &bits, &words) || !args.Uint32(1, "fromPage", &from_page) ||
      !args.Words32(2, "out", &out, &out_length)) {
    return {};
  }
  size_t n = 0;
  size_t word = from_page / 32;
  const size_t CHUNK = 64;
  while (word < words && n < out_length) {
    if (word % CHUNK == 0 && word + CHUNK <= words && AllZero(bits + word, CHUNK)) {
      word += CHUNK;
      continue;
    }
    uint32_t w = bits[word];
    if (word == from_page / 32) w &= ~0u << (from_page % 32);
    while (w != 0 && n < out_length) {
      out[n++] = static_cast<uint32_t>(word * 32 + __builtin_ctz(w));
      w &= w - 1;
    }
    ++word;
  }
  return Napi::Number::New(args.Env(), static_cast<double>(n));
}

}  // namespace

void RegisterBitmap(Napi::Env env, Napi::Object exports) {
  EXPORT_FUNCTION(env, exports, bitmapPages);
  EXPORT_FUNCTION(env, exports, bitmapOrLog);
  EXPORT_FUNCTION(env, exports, bitmapTake);
  EXPORT_FUNCTION(env, exports, bitmapTakeOr);
  EXPORT_FUNCTION(env, exports, bitmapCount);
}

}  // namespace tsvmm
