// virtio-blk back-end throughput without a guest (issue 4, item 8): a
// host-side driver builds requests in a GuestMemory and drives VirtioBlk
// through its virtqueue (process_queue / process_completions called
// directly on this thread, as the event loop would), against plain reads
// and writes of the same file (the physical limit).
//
// Workloads: sequential 1 MiB reads, sequential 1 MiB writes, random 4 KiB
// reads (4 KiB-aligned offsets from a fixed seed). Every variant of a
// workload touches the same file at the same offsets in the same order, with
// the same buffers (in the GuestMemory) and the same caching:
//   --cache warm (default): the file is read once beforehand so it sits in
//     the page cache; this measures the back-end's CPU cost per request,
//     which is what the device adds on top of the file.
//   --cache cold: before each run the file's pages are dropped
//     (fdatasync + posix_fadvise DONTNEED, this file only), so reads come
//     from the disk under /var/tmp.
// Writes: warm, timed until the last write completes (into the page cache);
// cold, timed until a final FLUSH (raw: fdatasync) has completed, so the
// data is on the disk. Either way an fdatasync before each run keeps runs
// from inheriting each other's dirty pages.
//
// Variants:
//   raw pread/pwrite  QD1   plain syscalls on our own fd
//   blk sync          QD1   VirtioBlk engine=sync, one request at a time
//   blk sync          QD32  engine=sync, the driver keeps 32 posted
//   raw io_uring      QD32  our own io_uring, 32 in flight
//   blk io_uring      QD32  VirtioBlk engine=io_uring, 32 in flight
// Ratios: blk sync vs raw pread/pwrite; blk io_uring vs raw io_uring; as
// throughput (wall clock, higher is better) and as CPU time per request
// (user + system of the process, lower is better; less disturbed than wall
// time on a shared machine).
//
// A last table, "ring only", sends zero-length reads that the device
// completes without file I/O: the cost of one request's trip through the
// virtqueue, the device and the (host-side) driver.
//
// Prints figures, not pass/fail: throughput from the fastest of --reps runs
// (on a shared machine the fastest run is the one least disturbed by other
// work), CPU time per request as the median of the runs.
//
//   rz_blk_bench [--file /var/tmp/rz_blk_bench.img] [--size-mib 1024]
//                [--cache warm|cold] [--reps 3] [--rand-ops 200000] [--keep]
//                [--only seqread|seqwrite|randread|ring] [--variant N (0..4)]
#include <fcntl.h>
#include <liburing.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "memory/guest_memory.h"
#include "util/error.h"
#include "virtio/blk.h"
#include "virtio/queue.h"
#include "virtio/virtio_defs.h"

using namespace rz;
using namespace rz::virtio;

namespace {

constexpr uint16_t kRingSize = 256;
constexpr uint64_t kDescGpa = 0x10000;
constexpr uint64_t kAvailGpa = 0x20000;
constexpr uint64_t kUsedGpa = 0x30000;
constexpr uint64_t kSlotMetaGpa = 0x40000;  // per slot: 16-byte header + status byte
constexpr uint64_t kDataGpa = 0x100000;     // per slot: one data buffer
constexpr uint32_t kMaxQd = 32;

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "rz_blk_bench: %s\n", msg.c_str());
  std::exit(1);
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// kRing: zero-length reads, which the device completes without touching the
// file: what one request costs in the virtqueue and the device alone.
enum class Kind { kSeqRead, kSeqWrite, kRandRead, kRing };

struct Workload {
  const char* name;
  Kind kind;
  uint32_t block;
  std::vector<uint64_t> offsets;  // bytes, in issue order
  bool flush_at_end = false;      // a timed FLUSH / fdatasync after the last write
  bool write() const { return kind == Kind::kSeqWrite; }
};

struct Result {
  double seconds = 0;      // wall
  double cpu_seconds = 0;  // user + system of the whole process (io-wq workers too)
  uint64_t ops = 0;
  uint64_t bytes = 0;
  double mib_s() const { return bytes / seconds / (1 << 20); }
  double iops() const { return ops / seconds; }
  double cpu_us_per_op() const { return cpu_seconds * 1e6 / ops; }
};

double cpu_s() {
  struct rusage ru {};
  ::getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
         (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// Buffers are used round-robin from a FIFO of kMaxQd slots in every variant,
// so each touches the same memory in the same way (32 x the block size).
class SlotFifo {
 public:
  SlotFifo() {
    for (uint32_t i = 0; i < kMaxQd; ++i) q_[i] = i;
  }
  uint32_t take() { return q_[head_++ % kMaxQd]; }
  void give(uint32_t s) { q_[tail_++ % kMaxQd] = s; }

 private:
  uint32_t q_[kMaxQd];
  uint64_t head_ = 0, tail_ = kMaxQd;
};

class NullInterrupt : public Interrupt {
 public:
  void notify_queue(uint16_t) override { count.fetch_add(1, std::memory_order_relaxed); }
  void notify_config() override {}
  std::atomic<uint64_t> count{0};
};

// --- The guest-side driver ----------------------------------------------------------
// Slot i owns descriptors 3i (header), 3i+1 (data), 3i+2 (status) and keeps
// them: re-posting a slot only rewrites the header's sector and the avail
// ring, as a lean guest driver would.
class Driver {
 public:
  Driver(const memory::GuestMemory& mem, uint32_t block) : mem_(mem), block_(block) {}

  void configure(Queue& q) {
    std::vector<uint8_t> zero(kDataGpa - kDescGpa, 0);
    mem_.write(kDescGpa, zero.data(), zero.size());
    q.set_size(kRingSize);
    q.set_desc_table(kDescGpa);
    q.set_avail_ring(kAvailGpa);
    q.set_used_ring(kUsedGpa);
    q.set_ready(true);
    avail_ = used_seen_ = kicked_at_ = 0;
  }

  static uint64_t data_gpa(uint32_t slot) { return kDataGpa + uint64_t{slot} * (1 << 20); }
  uint8_t* data_host(uint32_t slot) const { return mem_.host_ptr(data_gpa(slot), block_); }

  // Slot kMaxQd is a FLUSH request: header and status, no data.
  void prepare_flush() {
    const uint64_t hdr = kSlotMetaGpa + 32 * kMaxQd;
    const uint16_t d0 = static_cast<uint16_t>(3 * kMaxQd);
    desc(d0, hdr, 16, kVirtqDescFNext, d0 + 1);
    desc(d0 + 1, hdr + 16, 1, kVirtqDescFWrite, 0);
    mem_.write_obj(hdr, kVirtioBlkTFlush);
    mem_.write_obj(hdr + 4, uint32_t{0});
  }

  void prepare(uint32_t slot, bool write) {
    const uint64_t hdr = kSlotMetaGpa + 32 * slot;
    const uint16_t d0 = static_cast<uint16_t>(3 * slot);
    desc(d0, hdr, 16, kVirtqDescFNext, d0 + 1);
    desc(d0 + 1, data_gpa(slot), block_, kVirtqDescFNext | (write ? 0 : kVirtqDescFWrite), d0 + 2);
    desc(d0 + 2, hdr + 16, 1, kVirtqDescFWrite, 0);
    const uint32_t type = write ? kVirtioBlkTOut : kVirtioBlkTIn;
    mem_.write_obj(hdr, type);
    mem_.write_obj(hdr + 4, uint32_t{0});
  }

  // Makes slot's request for `offset` available (published by publish()).
  void post(uint32_t slot, uint64_t offset) {
    const uint64_t hdr = kSlotMetaGpa + 32 * slot;
    mem_.write_obj(hdr + 8, offset / 512);
    mem_.write_obj(hdr + 16, uint8_t{0xff});
    mem_.write_obj<uint16_t>(kAvailGpa + 4 + 2 * (avail_ % kRingSize),
                             static_cast<uint16_t>(3 * slot));
    ++avail_;
  }
  void publish() {
    std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(mem_.host_ptr(kAvailGpa + 2, 2)))
        .store(avail_, std::memory_order_release);
  }
  // EVENT_IDX: does the device want a notification for what was published?
  bool should_kick() {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    const uint16_t event = *mem_.read_obj<uint16_t>(kUsedGpa + 4 + 8 * kRingSize);
    const bool kick = vring_need_event(event, avail_, kicked_at_);
    kicked_at_ = avail_;
    return kick;
  }

  // Next used element: the slot it completes and its status.
  bool pop_used(uint32_t* slot, uint8_t* status) {
    const uint16_t idx =
        std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(mem_.host_ptr(kUsedGpa + 2, 2)))
            .load(std::memory_order_acquire);
    if (idx == used_seen_) return false;
    const uint32_t id = *mem_.read_obj<uint32_t>(kUsedGpa + 4 + 8 * (used_seen_ % kRingSize));
    ++used_seen_;
    *slot = id / 3;
    *status = *mem_.read_obj<uint8_t>(kSlotMetaGpa + 32 * *slot + 16);
    // Ask for an interrupt after the next one, as Linux does (used_event).
    mem_.write_obj<uint16_t>(kAvailGpa + 4 + 2 * kRingSize, used_seen_);
    return true;
  }

 private:
  void desc(uint16_t i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next) {
    const uint64_t at = kDescGpa + 16 * uint64_t{i};
    mem_.write_obj(at, addr);
    mem_.write_obj(at + 8, len);
    mem_.write_obj(at + 12, flags);
    mem_.write_obj(at + 14, next);
  }

  const memory::GuestMemory& mem_;
  uint32_t block_;
  uint16_t avail_ = 0, used_seen_ = 0, kicked_at_ = 0;
};

// --- Runs -------------------------------------------------------------------------------

Result run_device(const std::string& path, BlockEngine engine, uint32_t qd,
                  const memory::GuestMemory& mem, const Workload& w) {
  BlkConfig cfg;
  cfg.path = path;
  cfg.engine = engine;
  VirtioBlk blk(cfg);
  Queue q(kRingSize);
  Driver drv(mem, w.block);
  drv.configure(q);
  auto irq = std::make_shared<NullInterrupt>();
  if (!blk.activate(mem, blk.device_features(), {&q}, irq)) die("activate failed");
  for (uint32_t s = 0; s < kMaxQd; ++s) drv.prepare(s, w.write());

  const uint64_t total = w.offsets.size();
  uint64_t next = 0, done = 0;
  SlotFifo slots;
  const double t0 = now_s(), c0 = cpu_s();
  for (uint32_t i = 0; i < qd && next < total; ++i) drv.post(slots.take(), w.offsets[next++]);
  drv.publish();
  if (drv.should_kick()) blk.process_queue(0);
  while (done < total) {
    bool any = false;
    uint32_t slot;
    uint8_t status;
    while (drv.pop_used(&slot, &status)) {
      if (status != kVirtioBlkSOk) die("request failed with status " + std::to_string(status));
      ++done;
      any = true;
      slots.give(slot);
      if (next < total) drv.post(slots.take(), w.offsets[next++]);
    }
    if (any) {
      drv.publish();
      if (drv.should_kick()) blk.process_queue(0);
      continue;
    }
    if (blk.completion_fd() < 0) die("sync engine left requests unfinished");
    struct pollfd p {blk.completion_fd(), POLLIN, 0};
    if (::poll(&p, 1, 10000) != 1) die("no completion within 10 s");
    blk.process_completions();
  }
  if (w.flush_at_end) {
    drv.prepare_flush();
    drv.post(kMaxQd, 0);
    drv.publish();
    if (drv.should_kick()) blk.process_queue(0);
    uint32_t slot = 0;
    uint8_t status = 0;
    while (!drv.pop_used(&slot, &status)) {
      if (blk.completion_fd() < 0) die("sync engine left the flush unfinished");
      struct pollfd p {blk.completion_fd(), POLLIN, 0};
      if (::poll(&p, 1, 60000) != 1) die("no flush completion within 60 s");
      blk.process_completions();
    }
    if (slot != kMaxQd || status != kVirtioBlkSOk) die("flush failed");
  }
  Result r;
  r.seconds = now_s() - t0;
  r.cpu_seconds = cpu_s() - c0;
  r.ops = total;
  r.bytes = total * w.block;
  blk.reset();
  return r;
}

Result run_raw_sync(int fd, const memory::GuestMemory& mem, const Workload& w) {
  SlotFifo slots;
  const double t0 = now_s(), c0 = cpu_s();
  for (uint64_t off : w.offsets) {
    const uint32_t slot = slots.take();
    uint8_t* buf = mem.host_ptr(Driver::data_gpa(slot), w.block);
    const ssize_t n = w.write() ? ::pwrite(fd, buf, w.block, static_cast<off_t>(off))
                                : ::pread(fd, buf, w.block, static_cast<off_t>(off));
    if (n != static_cast<ssize_t>(w.block)) die("raw I/O failed");
    slots.give(slot);
  }
  if (w.flush_at_end && ::fdatasync(fd) < 0) die("fdatasync failed");
  Result r;
  r.seconds = now_s() - t0;
  r.cpu_seconds = cpu_s() - c0;
  r.ops = w.offsets.size();
  r.bytes = r.ops * w.block;
  return r;
}

Result run_raw_uring(int fd, uint32_t qd, const memory::GuestMemory& mem, const Workload& w) {
  io_uring ring;
  if (io_uring_queue_init(128, &ring, 0) < 0) die("io_uring_queue_init");
  const uint64_t total = w.offsets.size();
  uint64_t next = 0, done = 0;
  SlotFifo slots;
  auto queue = [&](uint32_t slot) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring);
    uint8_t* buf = mem.host_ptr(Driver::data_gpa(slot), w.block);
    const uint64_t off = w.offsets[next++];
    if (w.write()) io_uring_prep_write(sqe, fd, buf, w.block, off);
    else io_uring_prep_read(sqe, fd, buf, w.block, off);
    io_uring_sqe_set_data64(sqe, slot);
  };
  const double t0 = now_s(), c0 = cpu_s();
  for (uint32_t i = 0; i < qd && next < total; ++i) queue(slots.take());
  io_uring_submit(&ring);
  while (done < total) {
    io_uring_cqe* cqe;
    if (io_uring_wait_cqe(&ring, &cqe) < 0) die("io_uring_wait_cqe");
    unsigned head, n = 0;
    bool queued = false;
    io_uring_for_each_cqe(&ring, head, cqe) {
      if (cqe->res != static_cast<int>(w.block)) die("raw io_uring I/O failed");
      ++n;
      ++done;
      slots.give(static_cast<uint32_t>(cqe->user_data));
      if (next < total) {
        queue(slots.take());
        queued = true;
      }
    }
    io_uring_cq_advance(&ring, n);
    if (queued) io_uring_submit(&ring);
  }
  if (w.flush_at_end) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring);
    io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
    io_uring_submit(&ring);
    io_uring_cqe* cqe;
    if (io_uring_wait_cqe(&ring, &cqe) < 0 || cqe->res < 0) die("io_uring fsync failed");
    io_uring_cqe_seen(&ring, cqe);
  }
  Result r;
  r.seconds = now_s() - t0;
  r.cpu_seconds = cpu_s() - c0;
  r.ops = total;
  r.bytes = total * w.block;
  io_uring_queue_exit(&ring);
  return r;
}

// --- File and cache handling ------------------------------------------------------------

void create_file(const std::string& path, uint64_t bytes) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && static_cast<uint64_t>(st.st_size) == bytes) return;
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) die("cannot create " + path + ": " + std::strerror(errno));
  std::vector<uint8_t> chunk(1 << 20);
  std::mt19937_64 rng(1);
  for (uint64_t off = 0; off < bytes; off += chunk.size()) {
    for (size_t i = 0; i < chunk.size(); i += 8) {
      const uint64_t v = rng();
      std::memcpy(&chunk[i], &v, 8);
    }
    if (::pwrite(fd, chunk.data(), chunk.size(), static_cast<off_t>(off)) !=
        static_cast<ssize_t>(chunk.size())) {
      die("cannot fill " + path);
    }
  }
  ::fdatasync(fd);
  ::close(fd);
}

// Flushes dirty pages; then either drops the file's cached pages (cold) or
// reads the whole file so it is cached (warm).
void prepare_cache(int fd, uint64_t bytes, bool cold, const memory::GuestMemory& mem) {
  ::fdatasync(fd);
  if (cold) {
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    return;
  }
  uint8_t* buf = mem.host_ptr(Driver::data_gpa(0), 1 << 20);
  for (uint64_t off = 0; off < bytes; off += 1 << 20) {
    if (::pread(fd, buf, 1 << 20, static_cast<off_t>(off)) < 0) die("warm-up read failed");
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string path = "/var/tmp/rz_blk_bench.img";
  uint64_t size_mib = 1024;
  bool cold = false, keep = false;
  int reps = 3;
  uint64_t rand_ops = 200000;
  std::string only;  // --only seqread|seqwrite|randread
  int only_variant = -1;  // --variant N: run just that row (for profiling)
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) die(a + " needs a value");
      return argv[++i];
    };
    if (a == "--file") path = val();
    else if (a == "--size-mib") size_mib = std::stoull(val());
    else if (a == "--cache") {
      const std::string v = val();
      if (v != "warm" && v != "cold") die("--cache warm|cold");
      cold = v == "cold";
    } else if (a == "--reps") reps = std::max(1, std::stoi(val()));
    else if (a == "--rand-ops") rand_ops = std::stoull(val());
    else if (a == "--keep") keep = true;
    else if (a == "--only") only = val();
    else if (a == "--variant") only_variant = std::stoi(val());
    else die("unknown option " + a + " (see the comment at the top of blk_backend_bench.cpp)");
  }
  if (size_mib < 64) die("--size-mib must be at least 64");
  const uint64_t bytes = size_mib << 20;

  std::printf("virtio-blk back-end benchmark: file %s, %" PRIu64 " MiB, cache %s, %d runs each\n",
              path.c_str(), size_mib, cold ? "cold (fadvise DONTNEED before each run)" : "warm",
              reps);
  std::fflush(stdout);
  create_file(path, bytes);
  auto mem = memory::GuestMemory::create({{0, kDataGpa + uint64_t{kMaxQd} * (1 << 20)}});
  std::memset(mem.host_ptr(kDataGpa, uint64_t{kMaxQd} << 20), 0x5a, uint64_t{kMaxQd} << 20);
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) die("open " + path);

  std::vector<Workload> workloads;
  {
    Workload r{"seq read 1 MiB", Kind::kSeqRead, 1 << 20, {}};
    for (uint64_t off = 0; off + r.block <= bytes; off += r.block) r.offsets.push_back(off);
    Workload wr{"seq write 1 MiB", Kind::kSeqWrite, 1 << 20, r.offsets};
    wr.flush_at_end = cold;
    Workload rr{"rand read 4 KiB", Kind::kRandRead, 4096, {}};
    std::mt19937_64 rng(42);
    const uint64_t ops = cold ? std::min<uint64_t>(rand_ops, 20000) : rand_ops;
    for (uint64_t i = 0; i < ops; ++i) rr.offsets.push_back((rng() % (bytes / 4096)) * 4096);
    Workload ring{"ring only (0 B)", Kind::kRing, 0, {}};
    ring.offsets.assign(rand_ops, 0);
    if (only.empty() || only == "seqread") workloads.push_back(std::move(r));
    if (only.empty() || only == "seqwrite") workloads.push_back(std::move(wr));
    if (only.empty() || only == "randread") workloads.push_back(std::move(rr));
    if (only.empty() || only == "ring") workloads.push_back(std::move(ring));
  }

  struct Variant {
    const char* name;
    int kind;  // 0 raw sync, 1 raw io_uring, 2 device
    BlockEngine engine;
    uint32_t qd;
  };
  const Variant variants[] = {
      {"raw pread/pwrite  QD1 ", 0, BlockEngine::kSync, 1},
      {"blk sync          QD1 ", 2, BlockEngine::kSync, 1},
      {"blk sync          QD32", 2, BlockEngine::kSync, 32},
      {"raw io_uring      QD32", 1, BlockEngine::kIoUring, 32},
      {"blk io_uring      QD32", 2, BlockEngine::kIoUring, 32},
  };

  constexpr size_t kVariants = sizeof(variants) / sizeof(variants[0]);
  for (const Workload& w : workloads) {
    // Reps are interleaved (every variant once, then again) so that a change
    // in the machine's load hits all variants alike.
    std::vector<std::vector<Result>> runs(kVariants);
    for (int rep = 0; rep < reps; ++rep) {
      for (size_t vi = 0; vi < kVariants; ++vi) {
        const Variant& v = variants[vi];
        if (only_variant >= 0 && static_cast<size_t>(only_variant) != vi) continue;
        if (w.kind == Kind::kRing && v.kind != 2) continue;  // nothing to compare with
        if (w.kind != Kind::kRing) prepare_cache(fd, bytes, cold, mem);
        try {
          // The raw variants, like the device, use a fresh open file
          // description per run (same flags, fresh readahead state).
          if (v.kind != 2) {
            const int rfd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
            if (rfd < 0) die("open " + path);
            runs[vi].push_back(v.kind == 0 ? run_raw_sync(rfd, mem, w)
                                           : run_raw_uring(rfd, v.qd, mem, w));
            ::close(rfd);
          } else {
            runs[vi].push_back(run_device(path, v.engine, v.qd, mem, w));
          }
        } catch (const std::exception& e) {
          die(e.what());
        }
      }
    }
    std::printf("\n%-16s  %-22s %9s %9s %10s %7s %8s\n", w.name, "variant", "MiB/s", "IOPS",
                "CPU us/op", "ratio", "CPU ratio");
    Result raw_sync, raw_uring;
    for (size_t vi = 0; vi < kVariants; ++vi) {
      const Variant& v = variants[vi];
      if (runs[vi].empty()) continue;
      auto by_wall = runs[vi];
      std::sort(by_wall.begin(), by_wall.end(),
                [](const Result& a, const Result& b) { return a.seconds < b.seconds; });
      auto by_cpu = runs[vi];
      std::sort(by_cpu.begin(), by_cpu.end(),
                [](const Result& a, const Result& b) { return a.cpu_seconds < b.cpu_seconds; });
      Result med = by_wall.front();  // fastest
      med.cpu_seconds = by_cpu[by_cpu.size() / 2].cpu_seconds;
      if (v.kind == 0) raw_sync = med;
      if (v.kind == 1) raw_uring = med;
      if (v.kind == 2 && (v.engine == BlockEngine::kSync ? raw_sync : raw_uring).ops != 0) {
        const Result& base = v.engine == BlockEngine::kSync ? raw_sync : raw_uring;
        std::printf("%-16s  %-22s %9.0f %9.0f %10.2f %6.2fx %7.2fx\n", "", v.name, med.mib_s(),
                    med.iops(), med.cpu_us_per_op(), med.mib_s() / base.mib_s(),
                    med.cpu_us_per_op() / base.cpu_us_per_op());
      } else {
        std::printf("%-16s  %-22s %9.0f %9.0f %10.2f %7s %8s\n", "", v.name, med.mib_s(),
                    med.iops(), med.cpu_us_per_op(), "-", "-");
      }
    }
    std::fflush(stdout);
  }
  ::close(fd);
  if (!keep) ::unlink(path.c_str());
  return 0;
}
