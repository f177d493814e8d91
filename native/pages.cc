// Bulk helpers over guest pages and stream bytes (DESIGN, "The native boundary": pure,
// allocation-free helpers over buffers). Migration spends its time per byte here: telling zero pages
// from data pages, and the stream checksum. In JS the first ran at ~300 MB/s and SHA-1 at ~600 MB/s on
// this machine, both far under what loopback TCP carries (bench/migrate).
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "addon.h"
#include "args.h"
#include "zero.h"

namespace tsvmm {
namespace {

// packPages(bytes, pageBytes, pages, out, at, zeroKind, dataKind): appends one entry per page of
// `pages` to `out` from byte `at`: u32 page index (little-endian), u8 kind, and for a data page its
// pageBytes copied from `bytes` (a zero page carries nothing). The kind codes are the caller's (the
// migration stream's RAM record format, src/migration/ram-record.ts); the zero test and the copy are
// one pass over each page. Returns the end offset. Throws RangeError, writing nothing past `out`,
// for a page outside `bytes` or an `out` too short for every page as data.
Napi::Value packPages(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  Bytes bytes, out;
  uint32_t page_bytes, at, zero_kind, data_kind;
  uint32_t* pages;
  size_t count;
  if (!args.Uint8Array(0, "bytes", 0, &bytes) || !args.Uint32(1, "pageBytes", &page_bytes) ||
      !args.Words32(2, "pages", &pages, &count) || !args.Uint8Array(3, "out", 0, &out) ||
      !args.Uint32(4, "at", &at) || !args.Uint32(5, "zeroKind", &zero_kind) || !args.Uint32(6, "dataKind", &data_kind)) {
    return {};
  }
  if (page_bytes == 0 || static_cast<uint64_t>(at) + count * (5 + static_cast<uint64_t>(page_bytes)) > out.length) {
    Napi::RangeError::New(args.Env(), "packPages: pageBytes must be positive and out hold every page as data after at").ThrowAsJavaScriptException();
    return {};
  }
  uint8_t* o = out.data + at;
  for (size_t i = 0; i < count; ++i) {
    uint64_t from = static_cast<uint64_t>(pages[i]) * page_bytes;
    if (from + page_bytes > bytes.length) {
      Napi::RangeError::New(args.Env(), "packPages: page " + std::to_string(pages[i]) + " lies outside bytes").ThrowAsJavaScriptException();
      return {};
    }
    const uint8_t* page = bytes.data + from;
    std::memcpy(o, &pages[i], 4);  // x86: little-endian
    if (AllZeroBytes(page, page_bytes)) {
      o[4] = static_cast<uint8_t>(zero_kind);
      o += 5;
    } else {
      o[4] = static_cast<uint8_t>(data_kind);
      std::memcpy(o + 5, page, page_bytes);
      o += 5 + page_bytes;
    }
  }
  return Napi::Number::New(args.Env(), static_cast<double>(o - out.data));
}

// unpackPages(payload, at, maxEntries, dataKind, bytes, pageBytes): the reverse of packPages for a
// run of data entries: from byte `at` of `payload`, while an entry is complete, of kind `dataKind`
// and names a page inside `bytes`, copies its pageBytes of data to that page of `bytes`; at most
// maxEntries. Returns how many it copied; it stops at the first entry it cannot copy, which the
// caller reads itself (and reports, if it is malformed). One call per run instead of a call and a
// view per page: the destination of a migration spent more on those than on the copies.
Napi::Value unpackPages(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  Bytes payload, bytes;
  uint32_t at, max_entries, data_kind, page_bytes;
  if (!args.Uint8Array(0, "payload", 0, &payload) || !args.Uint32(1, "at", &at) ||
      !args.Uint32(2, "maxEntries", &max_entries) || !args.Uint32(3, "dataKind", &data_kind) ||
      !args.Uint8Array(4, "bytes", 0, &bytes) || !args.Uint32(5, "pageBytes", &page_bytes)) {
    return {};
  }
  if (page_bytes == 0) {
    Napi::RangeError::New(args.Env(), "unpackPages: pageBytes must be positive").ThrowAsJavaScriptException();
    return {};
  }
  uint64_t o = at;
  uint32_t done = 0;
  while (done < max_entries && o + 5 + page_bytes <= payload.length) {
    uint32_t page;
    std::memcpy(&page, payload.data + o, 4);  // x86: little-endian
    if (payload.data[o + 4] != data_kind) break;
    uint64_t to = static_cast<uint64_t>(page) * page_bytes;
    if (to + page_bytes > bytes.length) break;
    std::memcpy(bytes.data + to, payload.data + o + 5, page_bytes);
    o += 5 + page_bytes;
    ++done;
  }
  return Napi::Number::New(args.Env(), done);
}

// XXH64 (Yann Collet's xxHash, 64-bit), streaming: four 64-bit lanes over 32-byte stripes, then a
// merge and an avalanche. It replaced CRC-32C as the stream checksum: plain 64-bit multiplies and
// rotates, so it runs at memory speed everywhere, while the crc32 instruction (when it exists) does
// 8 bytes per step and, emulated (nested KVM on TCG), crawled at ~50 MB/s.
constexpr uint64_t kPrime1 = 0x9E3779B185EBCA87ULL;
constexpr uint64_t kPrime2 = 0xC2B2AE3D27D4EB4FULL;
constexpr uint64_t kPrime3 = 0x165667B19E3779F9ULL;
constexpr uint64_t kPrime4 = 0x85EBCA77C2B2AE63ULL;
constexpr uint64_t kPrime5 = 0x27D4EB2F165667C5ULL;

// The running state, kept by the caller in a Uint8Array of kXxh64StateBytes (all zero = seed 0,
// nothing fed): the four lanes hold (lane - its seed offset), so a zeroed state is a valid start.
struct Xxh64State {
  uint64_t lane[4];
  uint64_t total;
  uint8_t pending[32];
  uint32_t pending_bytes;
  uint32_t reserved;
};
constexpr size_t kXxh64StateBytes = sizeof(Xxh64State);
static_assert(kXxh64StateBytes == 80);
// Lane i starts at seed + kLaneStart[i] (seed 0); the state stores it without, so zeros mean "new".
constexpr uint64_t kLaneStart[4] = {kPrime1 + kPrime2, kPrime2, 0, 0 - kPrime1};

inline uint64_t Rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
inline uint64_t Read64(const uint8_t* p) { uint64_t v; std::memcpy(&v, p, 8); return v; }
inline uint32_t Read32(const uint8_t* p) { uint32_t v; std::memcpy(&v, p, 4); return v; }
inline uint64_t Round(uint64_t acc, uint64_t input) { return Rotl(acc + input * kPrime2, 31) * kPrime1; }
inline uint64_t MergeRound(uint64_t acc, uint64_t lane) { return (acc ^ Round(0, lane)) * kPrime1 + kPrime4; }

// Consumes whole stripes from p (n a multiple of 32) into live lanes v.
inline void Stripes(uint64_t v[4], const uint8_t* p, size_t n) {
  uint64_t a = v[0], b = v[1], c = v[2], d = v[3];
  for (const uint8_t* end = p + n; p < end; p += 32) {
    a = Round(a, Read64(p));
    b = Round(b, Read64(p + 8));
    c = Round(c, Read64(p + 16));
    d = Round(d, Read64(p + 24));
  }
  v[0] = a; v[1] = b; v[2] = c; v[3] = d;
}

void Xxh64Update(Xxh64State* s, const uint8_t* p, size_t n) {
  uint64_t v[4];
  for (int i = 0; i < 4; ++i) v[i] = s->lane[i] + kLaneStart[i];
  s->total += n;
  if (s->pending_bytes > 0) {
    size_t take = std::min<size_t>(32 - s->pending_bytes, n);
    std::memcpy(s->pending + s->pending_bytes, p, take);
    s->pending_bytes += take;
    p += take;
    n -= take;
    if (s->pending_bytes == 32) {
      Stripes(v, s->pending, 32);
      s->pending_bytes = 0;
    }
  }
  size_t whole = n & ~static_cast<size_t>(31);
  Stripes(v, p, whole);
  std::memcpy(s->pending + s->pending_bytes, p + whole, n - whole);
  s->pending_bytes += n - whole;
  for (int i = 0; i < 4; ++i) s->lane[i] = v[i] - kLaneStart[i];
}

uint64_t Xxh64Digest(const Xxh64State* s) {
  uint64_t h;
  if (s->total >= 32) {
    uint64_t v[4];
    for (int i = 0; i < 4; ++i) v[i] = s->lane[i] + kLaneStart[i];
    h = Rotl(v[0], 1) + Rotl(v[1], 7) + Rotl(v[2], 12) + Rotl(v[3], 18);
    for (int i = 0; i < 4; ++i) h = MergeRound(h, v[i]);
  } else {
    h = kPrime5;
  }
  h += s->total;
  const uint8_t* p = s->pending;
  size_t n = s->pending_bytes;
  for (; n >= 8; p += 8, n -= 8) h = Rotl(h ^ Round(0, Read64(p)), 27) * kPrime1 + kPrime4;
  if (n >= 4) {
    h = Rotl(h ^ (static_cast<uint64_t>(Read32(p)) * kPrime1), 23) * kPrime2 + kPrime3;
    p += 4;
    n -= 4;
  }
  for (; n > 0; ++p, --n) h = Rotl(h ^ (*p * kPrime5), 11) * kPrime1;
  h ^= h >> 33;
  h *= kPrime2;
  h ^= h >> 29;
  h *= kPrime3;
  h ^= h >> 32;
  return h;
}

// xxh64Update(state, bytes): feeds `bytes` into the running XXH64 in `state` (80 bytes, zeroed to
// begin). Feeding in pieces gives the hash of the pieces joined.
// pagemapToggles(entries, startMapped, out): `entries` holds /proc/self/pagemap entries (u64,
// little-endian, one per page); a page is mapped when bit 63 (present) or 62 (swapped) is set. Writes
// to `out`, ascending, the index of every entry whose mapped-ness differs from the entry before it
// (before the first: `startMapped`), and returns how many; `out` needs one element per entry at most.
// Stretches of unmapped entries are skipped 256 bytes at a time. GuestMemory.allocatedPages runs this
// once per region per migration, cold: in JS the scan of 262144 entries (1 GiB) took 6-7 ms, here
// ~0.2 ms beside the kernel's ~1.2 ms to fill them; an idle guest's migration on kvm_pvm went from
// 18-24 to 14-19 ms at 1 GiB and from ~43 to 21-31 ms at 4 GiB (bench/migrate --cases idle).
Napi::Value pagemapToggles(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  Bytes entries;
  uint32_t start_mapped;
  uint32_t* out;
  size_t out_length;
  if (!args.Uint8Array(0, "entries", 0, &entries) || !args.Uint32(1, "startMapped", &start_mapped) ||
      !args.Words32(2, "out", &out, &out_length)) {
    return {};
  }
  if (entries.length % 8 != 0) {
    Napi::RangeError::New(args.Env(), "pagemapToggles: argument entries must be whole u64 entries")
        .ThrowAsJavaScriptException();
    return {};
  }
  size_t count = entries.length / 8;
  if (out_length < count) {
    Napi::RangeError::New(args.Env(), "pagemapToggles: argument out must have an element per entry")
        .ThrowAsJavaScriptException();
    return {};
  }
  const uint64_t kMapped = 3ULL << 62;
  bool mapped = start_mapped != 0;
  size_t n = 0;
  size_t i = 0;
  while (i < count) {
    if (!mapped && i % 32 == 0 && i + 32 <= count && AllZeroBytes(entries.data + i * 8, 256)) {
      i += 32;
      continue;
    }
    if (((Load64(entries.data + i * 8) & kMapped) != 0) != mapped) {
      mapped = !mapped;
      out[n++] = static_cast<uint32_t>(i);
    }
    ++i;
  }
  return Napi::Number::New(args.Env(), static_cast<double>(n));
}

Napi::Value xxh64Update(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  Bytes state, bytes;
  if (!args.Uint8Array(0, "state", kXxh64StateBytes, &state) || !args.Uint8Array(1, "bytes", 0, &bytes)) return {};
  Xxh64State s;
  std::memcpy(&s, state.data, sizeof s);
  if (s.pending_bytes > 32) {
    Napi::RangeError::New(args.Env(), "xxh64Update: state is not an XXH64 state (pending bytes > 32)").ThrowAsJavaScriptException();
    return {};
  }
  Xxh64Update(&s, bytes.data, bytes.length);
  std::memcpy(state.data, &s, sizeof s);
  return args.Env().Undefined();
}

// xxh64Digest(state): the XXH64 (seed 0) of everything fed into `state`, as a BigInt; the state is
// unchanged, so feeding may go on.
Napi::Value xxh64Digest(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  Bytes state;
  if (!args.Uint8Array(0, "state", kXxh64StateBytes, &state)) return {};
  Xxh64State s;
  std::memcpy(&s, state.data, sizeof s);
  if (s.pending_bytes > 32) {
    Napi::RangeError::New(args.Env(), "xxh64Digest: state is not an XXH64 state (pending bytes > 32)").ThrowAsJavaScriptException();
    return {};
  }
  return Napi::BigInt::New(args.Env(), Xxh64Digest(&s));
}

}  // namespace

void RegisterPages(Napi::Env env, Napi::Object exports) {
  EXPORT_FUNCTION(env, exports, packPages);
  EXPORT_FUNCTION(env, exports, unpackPages);
  EXPORT_FUNCTION(env, exports, pagemapToggles);
  EXPORT_FUNCTION(env, exports, xxh64Update);
  EXPORT_FUNCTION(env, exports, xxh64Digest);
}

}  // namespace tsvmm
