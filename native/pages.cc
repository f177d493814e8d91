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

// packPages(bytes, pageBytes, pages, out, headAt, dataAt, zeroKind, dataKind): for each page of
// `pages`, writes its entry head (u32 page index, little-endian, and u8 kind) to `out` at headAt + 5i,
// and for a data page its pageBytes, copied from `bytes`, after the data pages before it from dataAt
// (a zero page carries no data). The kind codes and the layout are the caller's (the migration
// stream's RAM record, src/migration/ram-record.ts); the zero test and the copy are one pass over
// each page. Returns how many pages were data. Throws RangeError, writing nothing past `out`, for a
// page outside `bytes`, heads that would reach dataAt, or an `out` too short for every page as data.
Napi::Value packPages(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  Bytes bytes, out;
  uint32_t page_bytes, head_at, data_at, zero_kind, data_kind;
  uint32_t* pages;
  size_t count;
  if (!args.Uint8Array(0, "bytes", 0, &bytes) || !args.Uint32(1, "pageBytes", &page_bytes) ||
      !args.Words32(2, "pages", &pages, &count) || !args.Uint8Array(3, "out", 0, &out) ||
      !args.Uint32(4, "headAt", &head_at) || !args.Uint32(5, "dataAt", &data_at) ||
      !args.Uint32(6, "zeroKind", &zero_kind) || !args.Uint32(7, "dataKind", &data_kind)) {
    return {};
  }
  if (page_bytes == 0 || static_cast<uint64_t>(head_at) + count * 5 > data_at ||
      static_cast<uint64_t>(data_at) + count * static_cast<uint64_t>(page_bytes) > out.length) {
    Napi::RangeError::New(args.Env(), "packPages: pageBytes must be positive, the heads end by dataAt, and out hold every page as data after dataAt").ThrowAsJavaScriptException();
    return {};
  }
  uint8_t* head = out.data + head_at;
  uint8_t* data = out.data + data_at;
  size_t data_pages = 0;
  for (size_t i = 0; i < count; ++i, head += 5) {
    uint64_t from = static_cast<uint64_t>(pages[i]) * page_bytes;
    if (from + page_bytes > bytes.length) {
      Napi::RangeError::New(args.Env(), "packPages: page " + std::to_string(pages[i]) + " lies outside bytes").ThrowAsJavaScriptException();
      return {};
    }
    const uint8_t* page = bytes.data + from;
    std::memcpy(head, &pages[i], 4);  // x86: little-endian
    if (AllZeroBytes(page, page_bytes)) {
      head[4] = static_cast<uint8_t>(zero_kind);
    } else {
      head[4] = static_cast<uint8_t>(data_kind);
      std::memcpy(data, page, page_bytes);
      data += page_bytes;
      ++data_pages;
    }
  }
  return Napi::Number::New(args.Env(), static_cast<double>(data_pages));
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

// clearPages(bytes, pageBytes): writes zeros over each whole page of `bytes` that is not all zero
// already, and returns how many it wrote. Reading first leaves a page that is zero untouched (no
// write, no cache line dirtied), as QEMU's ram_handle_compressed does: in RAM allocated at start
// (--mem-prealloc), which must stay allocated, most pages an incoming migration says are zero still
// are. Throws RangeError for a pageBytes of 0 or a length that is not whole pages.
Napi::Value clearPages(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  Bytes bytes;
  uint32_t page_bytes;
  if (!args.Uint8Array(0, "bytes", 0, &bytes) || !args.Uint32(1, "pageBytes", &page_bytes)) return {};
  if (page_bytes == 0 || bytes.length % page_bytes != 0) {
    Napi::RangeError::New(args.Env(), "clearPages: pageBytes must be positive and bytes whole pages").ThrowAsJavaScriptException();
    return {};
  }
  size_t written = 0;
  for (size_t at = 0; at < bytes.length; at += page_bytes) {
    if (AllZeroBytes(bytes.data + at, page_bytes)) continue;
    std::memset(bytes.data + at, 0, page_bytes);
    ++written;
  }
  return Napi::Number::New(args.Env(), static_cast<double>(written));
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
  EXPORT_FUNCTION(env, exports, pagemapToggles);
  EXPORT_FUNCTION(env, exports, clearPages);
  EXPORT_FUNCTION(env, exports, xxh3Update);
  EXPORT_FUNCTION(env, exports, xxh3Digest);
}

}  // namespace tsvmm
