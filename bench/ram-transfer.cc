// ram-transfer MODE GIB DEST: one transfer of GIB GiB over a 127.0.0.1 TCP connection between two
// processes (a forked sender and this receiver), in C++ with no runtime in the way; prints the
// receiver's MiB/s from its first byte to its last. bench/ram-transfer.mjs builds and runs it (g++)
// to show what this host carries from guest-like RAM to guest-like RAM, beside the hot-buffer pair
// bench/migrate takes as its loopback limit (bench/loopback-tcp.c).
//
// MODE, what the sender writes:
//   ram     GIB GiB of RAM holding data (no zero page), 1 MiB per write, straight from that RAM
//   stream  the same RAM with the per-byte work of tsvmm's stream (src/migration/ram-record.ts):
//           each page tested for zero, copied into a record of 768 pages, the record hashed (XXH3)
//           and written; the receiver hashes what it reads, as a tsvmm destination does
// DEST, the memory the receiver reads into (GIB GiB, as a destination's guest RAM):
//   prealloc    mapped and populated before the transfer (tsvmm --mem-prealloc)
//   just-freed  mapped fresh, right after a 1 GiB-per-GiB holder was freed (bench/host-memory.mjs)
//   fresh       mapped fresh, with nothing freed just before
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include "../native/xxh3.h"

namespace {

constexpr size_t kPage = 4096;
constexpr size_t kRecordPages = 768;  // ram-record.ts BATCH_PAGES
constexpr size_t kChunk = 1 << 20;
#ifndef MADV_POPULATE_WRITE
constexpr int MADV_POPULATE_WRITE = 23;
#endif

double Now() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

[[noreturn]] void Die(const char* what) {
  perror(what);
  exit(1);
}

void WriteAll(int s, const uint8_t* p, size_t n) {
  while (n > 0) {
    ssize_t k = write(s, p, n);
    if (k <= 0) Die("ram-transfer: write");
    p += k;
    n -= static_cast<size_t>(k);
  }
}

uint8_t* Map(size_t bytes) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) Die("ram-transfer: mmap");
  madvise(p, bytes, MADV_HUGEPAGE);  // as GuestMemory maps guest RAM
  return static_cast<uint8_t*>(p);
}

// tsvmm's per-byte work on a stream of full pages: zero test, copy into a record, XXH3, write.
void SendRecords(int s, const uint8_t* ram, size_t bytes) {
  uint8_t* record = static_cast<uint8_t*>(aligned_alloc(kPage, kRecordPages * kPage));
  tsvmm::xxh3::State hash{};
  tsvmm::xxh3::Start(&hash);
  for (size_t o = 0; o < bytes; o += kRecordPages * kPage) {
    size_t n = 0;
    for (size_t p = o; p < o + kRecordPages * kPage && p < bytes; p += kPage) {
      if (tsvmm::AllZeroBytes(ram + p, kPage)) continue;
      memcpy(record + n, ram + p, kPage);
      n += kPage;
    }
    tsvmm::xxh3::Update(&hash, record, n);
    WriteAll(s, record, n);
  }
  if (tsvmm::xxh3::Digest(hash) == 0) fprintf(stderr, "ram-transfer: digest 0\n");  // keeps the hash
}

// Writes `bytes` as `mode` says, once the receiver's start byte has come.
void Send(int s, const char* mode, size_t bytes) {
  uint8_t* ram = Map(bytes);
  for (size_t o = 0; o < bytes; o += 8) {
    uint64_t v = (o * 0x9E3779B97F4A7C15ULL) | 1;  // no page is zero
    memcpy(ram + o, &v, 8);
  }
  uint8_t go;
  if (read(s, &go, 1) != 1) Die("ram-transfer: start");
  if (strcmp(mode, "ram") == 0) {
    for (size_t o = 0; o < bytes; o += kChunk) WriteAll(s, ram + o, kChunk);
  } else {
    SendRecords(s, ram, bytes);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: ram-transfer ram|stream GIB prealloc|just-freed|fresh\n");
    return 2;
  }
  const char* mode = argv[1];
  const size_t bytes = static_cast<size_t>(atof(argv[2]) * (1 << 30)) / kChunk * kChunk;
  const char* dest = argv[3];
  if ((strcmp(mode, "ram") != 0 && strcmp(mode, "stream") != 0) || bytes == 0 ||
      (strcmp(dest, "prealloc") != 0 && strcmp(dest, "just-freed") != 0 && strcmp(dest, "fresh") != 0)) {
    fprintf(stderr, "ram-transfer: bad arguments '%s' '%s' '%s'\n", argv[1], argv[2], argv[3]);
    return 2;
  }
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int l = socket(AF_INET, SOCK_STREAM, 0);
  if (l < 0 || bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a) || listen(l, 1) || getsockname(l, reinterpret_cast<sockaddr*>(&a), &len))
    Die("ram-transfer: listen");
  pid_t child = fork();
  if (child < 0) Die("ram-transfer: fork");
  if (child == 0) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (s < 0 || connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a)) Die("ram-transfer: connect");
    Send(s, mode, bytes);
    _exit(0);
  }
  int c = accept(l, nullptr, nullptr);
  if (c < 0) Die("ram-transfer: accept");
  uint8_t* holder = nullptr;
  if (strcmp(dest, "just-freed") == 0) {
    holder = Map(bytes);
    if (madvise(holder, bytes, MADV_POPULATE_WRITE) != 0) memset(holder, 1, bytes);
  }
  sleep(1);  // the sender fills its RAM meanwhile, and starts on the start byte
  if (holder != nullptr) munmap(holder, bytes);
  uint8_t* ram = Map(bytes);
  if (strcmp(dest, "prealloc") == 0 && madvise(ram, bytes, MADV_POPULATE_WRITE) != 0) memset(ram, 0, bytes);
  uint8_t go = 1;
  if (write(c, &go, 1) != 1) Die("ram-transfer: start");
  const bool hash = strcmp(mode, "stream") == 0;
  tsvmm::xxh3::State h{};
  tsvmm::xxh3::Start(&h);
  size_t got = 0;
  double t0 = 0;
  while (got < bytes) {
    ssize_t n = read(c, ram + got, bytes - got < kChunk ? bytes - got : kChunk);
    if (n <= 0) Die("ram-transfer: read");
    if (t0 == 0) t0 = Now();
    if (hash) tsvmm::xxh3::Update(&h, ram + got, static_cast<size_t>(n));
    got += static_cast<size_t>(n);
  }
  const double elapsed = Now() - t0;
  waitpid(child, nullptr, 0);
  if (hash && tsvmm::xxh3::Digest(h) == 0) fprintf(stderr, "ram-transfer: digest 0\n");
  printf("%.0f\n", bytes / elapsed / (1 << 20));
  return 0;
}
