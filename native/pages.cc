// Bulk helpers over guest pages and stream bytes (DESIGN, "The native boundary": pure,
// allocation-free helpers over buffers). Migration spends its time per byte here: telling zero pages
// from data pages, and the stream checksum. In JS the first ran at ~300 MB/s and SHA-1 at ~600 MB/s on
// this machine, both far under what loopback TCP carries (bench/migrate).
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "addon.h"
#include "args.h"
#include "xxh3.h"
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

// xxh3Update(state, bytes): feeds `bytes` into the running XXH3-64 in `state` (xxh3::kStateBytes,
// zeroed to begin; native/xxh3.h). Feeding in pieces gives the hash of the pieces joined.
Napi::Value xxh3Update(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  Bytes state, bytes;
  if (!args.Uint8Array(0, "state", xxh3::kStateBytes, &state) || !args.Uint8Array(1, "bytes", 0, &bytes)) return {};
  xxh3::State s;
  std::memcpy(&s, state.data, sizeof s);  // a Uint8Array need not be aligned
  if (!xxh3::Valid(s)) {
    Napi::RangeError::New(args.Env(), "xxh3Update: state is not an XXH3 state").ThrowAsJavaScriptException();
    return {};
  }
  xxh3::Update(&s, bytes.data, bytes.length);
  std::memcpy(state.data, &s, sizeof s);
  return args.Env().Undefined();
}

// xxh3Digest(state): the XXH3-64 (seed 0) of everything fed into `state`, as a BigInt; the state is
// unchanged, so feeding may go on.
Napi::Value xxh3Digest(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  Bytes state;
  if (!args.Uint8Array(0, "state", xxh3::kStateBytes, &state)) return {};
  xxh3::State s;
  std::memcpy(&s, state.data, sizeof s);
  if (!xxh3::Valid(s)) {
    Napi::RangeError::New(args.Env(), "xxh3Digest: state is not an XXH3 state").ThrowAsJavaScriptException();
    return {};
  }
  return Napi::BigInt::New(args.Env(), xxh3::Digest(s));
}

}  // namespace

void RegisterPages(Napi::Env env, Napi::Object exports) {
  EXPORT_FUNCTION(env, exports, packPages);
  EXPORT_FUNCTION(env, exports, unpackPages);
  EXPORT_FUNCTION(env, exports, pagemapToggles);
  EXPORT_FUNCTION(env, exports, xxh3Update);
  EXPORT_FUNCTION(env, exports, xxh3Digest);
}

}  // namespace tsvmm
