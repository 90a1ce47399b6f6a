// Unit tests for virtio-blk (src/virtio/blk.h) and its back-ends, without
// KVM: a mock guest (GuestMemory), the driver helper from
// virtio_test_driver.h, and a temporary raw image in /tmp. Most tests run
// once per engine (sync, io_uring).
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "memory/guest_memory.h"
#include "util/error.h"
#include "util/event_loop.h"
#include "virtio/blk.h"
#include "virtio/virtio_defs.h"
#include "virtio_test_driver.h"

namespace rz::virtio {
namespace {

using memory::GuestMemory;
using test::FakeInterrupt;
using test::QueueDriver;
using test::Seg;
using test::UsedElem;

constexpr uint64_t kMemSize = 8 << 20;
constexpr uint64_t kRingGpa = 0x1000;
constexpr uint64_t kDataGpa = 0x20000;
constexpr uint16_t kQSize = 256;
constexpr uint64_t kImageSectors = 4096;  // 2 MiB

const uint64_t kAllRingFeatures = feature_bit(kVirtioFVersion1) |
                                  feature_bit(kVirtioFIndirectDesc) |
                                  feature_bit(kVirtioFEventIdx);

// A temporary image file filled with a recognizable pattern.
class TempImage {
 public:
  explicit TempImage(uint64_t bytes, const std::string& dir = "/tmp") {
    std::string tmpl = dir + "/rz_blk_test_XXXXXX";
    std::vector<char> name(tmpl.begin(), tmpl.end());
    name.push_back('\0');
    int fd = ::mkstemp(name.data());
    if (fd < 0) throw std::runtime_error("mkstemp");
    path_ = name.data();
    std::vector<uint8_t> buf(bytes);
    for (uint64_t i = 0; i < bytes; ++i) buf[i] = pattern(i);
    if (::pwrite(fd, buf.data(), buf.size(), 0) != static_cast<ssize_t>(buf.size())) {
      ::close(fd);
      throw std::runtime_error("pwrite");
    }
    ::close(fd);
  }
  ~TempImage() { ::unlink(path_.c_str()); }
  const std::string& path() const { return path_; }

  static uint8_t pattern(uint64_t offset) {
    return static_cast<uint8_t>((offset * 7 + (offset >> 9) * 13 + 1) & 0xff);
  }
  std::vector<uint8_t> read(uint64_t offset, uint64_t len) const {
    std::vector<uint8_t> out(len);
    int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(::pread(fd, out.data(), len, static_cast<off_t>(offset)),
              static_cast<ssize_t>(len));
    ::close(fd);
    return out;
  }
  void write(uint64_t offset, const std::vector<uint8_t>& data) const {
    int fd = ::open(path_.c_str(), O_WRONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset)),
              static_cast<ssize_t>(data.size()));
    ::close(fd);
  }

 private:
  std::string path_;
};

std::vector<uint8_t> pattern_bytes(uint64_t offset, uint64_t len) {
  std::vector<uint8_t> v(len);
  for (uint64_t i = 0; i < len; ++i) v[i] = TempImage::pattern(offset + i);
  return v;
}

std::vector<uint8_t> fill_bytes(uint64_t len, uint8_t seed) {
  std::vector<uint8_t> v(len);
  for (uint64_t i = 0; i < len; ++i) v[i] = static_cast<uint8_t>(seed + i * 31 + (i >> 8));
  return v;
}

// A request the test driver made: where its status byte and data live.
struct Req {
  uint16_t head = 0;
  uint64_t status_gpa = 0;
  std::vector<Seg> data;  // data buffers, in order
};

class BlkHarness {
 public:
  explicit BlkHarness(const BlkConfig& cfg, uint64_t features = ~uint64_t{0},
                      EventLoop* loop = nullptr)
      : blk(std::make_unique<VirtioBlk>(cfg, loop)) {
    activate(features);
  }

  std::unique_ptr<QueueDriver> new_driver() {
    return std::make_unique<QueueDriver>(mem, kQSize, kRingGpa, kDataGpa, kMemSize - kDataGpa);
  }

  void activate(uint64_t features) {
    drv->configure(q);
    irq = std::make_shared<FakeInterrupt>();
    ASSERT_TRUE(blk->activate(mem, blk->device_features() & features, {&q}, irq));
  }

  uint64_t header(uint32_t type, uint64_t sector) {
    uint8_t h[16] = {};
    std::memcpy(h, &type, 4);
    std::memcpy(h + 8, &sector, 8);
    return drv->alloc_bytes(std::vector<uint8_t>(h, h + 16));
  }

  // Header, readable data buffers, writable data buffers, status byte.
  Req request(uint32_t type, uint64_t sector, const std::vector<std::vector<uint8_t>>& out_bufs,
              const std::vector<uint32_t>& in_lens, bool publish = true) {
    Req r;
    std::vector<Seg> segs{{header(type, sector), 16, false}};
    for (const auto& b : out_bufs) {
      Seg s{drv->alloc_bytes(b, 512), static_cast<uint32_t>(b.size()), false};
      segs.push_back(s);
      r.data.push_back(s);
    }
    for (uint32_t len : in_lens) {
      Seg s{drv->alloc(len, 512), len, true};
      drv->fill(s.gpa, len, 0xee);
      segs.push_back(s);
      r.data.push_back(s);
    }
    r.status_gpa = drv->alloc(1);
    drv->fill(r.status_gpa, 1, 0xff);
    segs.push_back({r.status_gpa, 1, true});
    r.head = publish ? drv->add_chain(segs) : drv->write_chain(segs);
    return r;
  }
  Req read(uint64_t sector, const std::vector<uint32_t>& lens) {
    return request(kVirtioBlkTIn, sector, {}, lens);
  }
  Req write(uint64_t sector, const std::vector<std::vector<uint8_t>>& bufs) {
    return request(kVirtioBlkTOut, sector, bufs, {});
  }
  Req segment_request(uint32_t type, uint64_t sector, uint32_t count, uint32_t flags,
                      int segments = 1) {
    std::vector<std::vector<uint8_t>> segs;
    for (int i = 0; i < segments; ++i) {
      std::vector<uint8_t> s(16);
      std::memcpy(s.data(), &sector, 8);
      std::memcpy(s.data() + 8, &count, 4);
      std::memcpy(s.data() + 12, &flags, 4);
      segs.push_back(s);
    }
    // One readable buffer holding all segments.
    std::vector<uint8_t> all;
    for (auto& s : segs) all.insert(all.end(), s.begin(), s.end());
    return request(type, 0, {all}, {});
  }

  // Lets the device run until nothing is in flight.
  void run() {
    blk->process_queue(0);
    settle();
  }
  void settle() {
    for (int i = 0; i < 10000 && blk->requests_in_flight() > 0; ++i) {
      struct pollfd p {blk->completion_fd(), POLLIN, 0};
      ASSERT_GE(blk->completion_fd(), 0);
      ASSERT_EQ(::poll(&p, 1, 5000), 1) << "no completion within 5 s";
      blk->process_completions();
    }
    ASSERT_EQ(blk->requests_in_flight(), 0u);
  }

  uint8_t status(const Req& r) const { return *mem.read_obj<uint8_t>(r.status_gpa); }
  // Data read into a request's writable buffers, concatenated.
  std::vector<uint8_t> data(const Req& r) const {
    std::vector<uint8_t> out;
    for (const Seg& s : r.data) {
      auto b = drv->read_bytes(s.gpa, s.len);
      out.insert(out.end(), b.begin(), b.end());
    }
    return out;
  }
  UsedElem used() {
    auto e = drv->pop_used();
    EXPECT_TRUE(e.has_value()) << "no used element";
    return e.value_or(UsedElem{0xffff, 0xffffffff});
  }
  uint32_t config32(size_t off) {
    uint32_t v = 0;
    blk->read_config(off, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), 4));
    return v;
  }
  uint64_t config64(size_t off) {
    uint64_t v = 0;
    blk->read_config(off, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), 8));
    return v;
  }
  uint8_t config8(size_t off) {
    uint8_t v = 0;
    blk->read_config(off, std::span<uint8_t>(&v, 1));
    return v;
  }

  GuestMemory mem = GuestMemory::create({{0, kMemSize}});
  std::unique_ptr<QueueDriver> drv = new_driver();
  Queue q{kQSize};
  std::shared_ptr<FakeInterrupt> irq;
  std::unique_ptr<VirtioBlk> blk;
};

class VirtioBlkTest : public ::testing::TestWithParam<BlockEngine> {
 protected:
  BlkConfig config(bool readonly = false, std::string serial = "") const {
    BlkConfig c;
    c.path = image.path();
    c.readonly = readonly;
    c.engine = GetParam();
    c.serial = std::move(serial);
    return c;
  }

  TempImage image{kImageSectors * 512};
};

// --- Configuration space and features -------------------------------------------

TEST_P(VirtioBlkTest, ConfigSpaceAndFeatures) {
  BlkHarness h(config());
  VirtioBlk& b = *h.blk;
  using L = VirtioBlkConfigLayout;
  EXPECT_EQ(b.device_type(), 2);
  EXPECT_EQ(b.num_queues(), 1);
  EXPECT_EQ(b.queue_max_size(0), VirtioBlk::kQueueSize);
  EXPECT_EQ(b.capacity_sectors(), kImageSectors);
  EXPECT_EQ(b.engine(), GetParam());
  EXPECT_EQ(h.config64(L::kCapacity), kImageSectors);
  EXPECT_EQ(h.config32(L::kSizeMax), VirtioBlk::kSizeMax);
  EXPECT_EQ(h.config32(L::kSegMax), VirtioBlk::kSegMax);
  EXPECT_EQ(h.config32(L::kBlkSize), 512u);
  EXPECT_EQ(h.config32(L::kNumQueues) & 0xffff, 1u);
  EXPECT_EQ(h.config32(L::kMaxDiscardSectors), VirtioBlk::kMaxDiscardSectors);
  EXPECT_EQ(h.config32(L::kMaxDiscardSeg), 1u);
  EXPECT_GE(h.config32(L::kDiscardSectorAlignment), 1u);
  EXPECT_EQ(h.config32(L::kMaxWriteZeroesSectors), VirtioBlk::kMaxWriteZeroesSectors);
  EXPECT_EQ(h.config32(L::kMaxWriteZeroesSeg), 1u);
  EXPECT_EQ(h.config8(L::kWriteZeroesMayUnmap), 1u);
  EXPECT_EQ(h.config8(L::kWriteback), 0u);
  // Beyond the end, and at offsets that would wrap: zeroes.
  EXPECT_EQ(h.config32(L::kSize), 0u);
  EXPECT_EQ(h.config32(4096), 0u);
  uint8_t wrap[4] = {1, 1, 1, 1};
  b.read_config(~uint64_t{0} - 1, wrap);
  EXPECT_EQ(wrap[0] | wrap[1] | wrap[2] | wrap[3], 0);
  // A partial read of capacity.
  uint8_t part[2];
  b.read_config(L::kCapacity + 1, part);
  EXPECT_EQ(part[0], (kImageSectors >> 8) & 0xff);

  const uint64_t f = b.device_features();
  for (unsigned bit : {kVirtioFVersion1, kVirtioFIndirectDesc, kVirtioFEventIdx,
                       kVirtioBlkFSizeMax, kVirtioBlkFSegMax, kVirtioBlkFBlkSize,
                       kVirtioBlkFFlush, kVirtioBlkFDiscard, kVirtioBlkFWriteZeroes}) {
    EXPECT_TRUE(f & feature_bit(bit)) << bit;
  }
  for (unsigned bit : {kVirtioBlkFRo, kVirtioBlkFMq, kVirtioBlkFConfigWce, kVirtioBlkFGeometry,
                       kVirtioBlkFTopology}) {
    EXPECT_FALSE(f & feature_bit(bit)) << bit;
  }
}

TEST_P(VirtioBlkTest, ReadonlyConfig) {
  BlkHarness h(config(true));
  const uint64_t f = h.blk->device_features();
  EXPECT_TRUE(f & feature_bit(kVirtioBlkFRo));
  EXPECT_FALSE(f & feature_bit(kVirtioBlkFDiscard));
  EXPECT_FALSE(f & feature_bit(kVirtioBlkFWriteZeroes));
  EXPECT_EQ(h.config32(VirtioBlkConfigLayout::kMaxDiscardSectors), 0u);
  EXPECT_TRUE(h.blk->readonly());
}

// --- Reads and writes -----------------------------------------------------------------

TEST_P(VirtioBlkTest, ReadReturnsFileContents) {
  BlkHarness h(config());
  Req r = h.read(3, {512, 1024, 512});
  h.run();
  UsedElem u = h.used();
  EXPECT_EQ(u.id, r.head);
  EXPECT_EQ(u.len, 2048u + 1);  // data + status
  EXPECT_EQ(h.status(r), kVirtioBlkSOk);
  EXPECT_EQ(h.data(r), pattern_bytes(3 * 512, 2048));
}

TEST_P(VirtioBlkTest, WriteReadRoundTripAtSeveralSectors) {
  BlkHarness h(config());
  const uint64_t sectors[] = {0, 1, 7, 1000, kImageSectors - 4};
  uint8_t seed = 1;
  for (uint64_t s : sectors) {
    auto a = fill_bytes(512, seed++);
    auto b = fill_bytes(1024, seed++);
    auto c = fill_bytes(512, seed++);
    Req w = h.write(s, {a, b, c});
    h.run();
    UsedElem u = h.used();
    EXPECT_EQ(u.id, w.head);
    EXPECT_EQ(u.len, 1u);
    ASSERT_EQ(h.status(w), kVirtioBlkSOk) << "sector " << s;

    std::vector<uint8_t> all(a);
    all.insert(all.end(), b.begin(), b.end());
    all.insert(all.end(), c.begin(), c.end());
    EXPECT_EQ(image.read(s * 512, 2048), all) << "file at sector " << s;

    Req r = h.read(s, {1024, 512, 512});
    h.run();
    u = h.used();
    EXPECT_EQ(u.len, 2049u);
    EXPECT_EQ(h.status(r), kVirtioBlkSOk);
    EXPECT_EQ(h.data(r), all) << "read back at sector " << s;
    h.drv->reset_alloc();
  }
  // Neighbours of the last write are untouched.
  EXPECT_EQ(image.read((kImageSectors - 5) * 512, 512),
            pattern_bytes((kImageSectors - 5) * 512, 512));
}

TEST_P(VirtioBlkTest, LayoutIndependence) {
  // Header split over two descriptors, data and status in one writable
  // buffer; then a write whose header and data share one buffer.
  BlkHarness h(config());
  const uint64_t hdr = h.header(kVirtioBlkTIn, 10);
  const uint64_t buf = h.drv->alloc(1025, 512);
  uint16_t head = h.drv->add_chain({{hdr, 4, false}, {hdr + 4, 12, false}, {buf, 1025, true}});
  h.run();
  UsedElem u = h.used();
  EXPECT_EQ(u.id, head);
  EXPECT_EQ(u.len, 1025u);
  EXPECT_EQ(*h.mem.read_obj<uint8_t>(buf + 1024), kVirtioBlkSOk);
  EXPECT_EQ(h.drv->read_bytes(buf, 1024), pattern_bytes(10 * 512, 1024));

  std::vector<uint8_t> combined(16 + 512);
  const uint32_t out = kVirtioBlkTOut;
  const uint64_t sector = 20;
  std::memcpy(combined.data(), &out, 4);
  std::memcpy(combined.data() + 8, &sector, 8);
  auto payload = fill_bytes(512, 77);
  std::memcpy(combined.data() + 16, payload.data(), 512);
  const uint64_t cbuf = h.drv->alloc_bytes(combined);
  const uint64_t st = h.drv->alloc(1);
  h.drv->add_chain({{cbuf, 528, false}, {st, 1, true}});
  h.run();
  h.used();
  EXPECT_EQ(*h.mem.read_obj<uint8_t>(st), kVirtioBlkSOk);
  EXPECT_EQ(image.read(20 * 512, 512), payload);
}

TEST_P(VirtioBlkTest, IndirectRequests) {
  BlkHarness h(config());
  auto payload = fill_bytes(4096, 9);
  const uint64_t hdr = h.header(kVirtioBlkTOut, 64);
  const uint64_t data = h.drv->alloc_bytes(payload, 512);
  const uint64_t st = h.drv->alloc(1);
  h.drv->add_indirect_chain({{hdr, 16, false}, {data, 4096, false}, {st, 1, true}});
  h.run();
  EXPECT_EQ(h.used().len, 1u);
  EXPECT_EQ(*h.mem.read_obj<uint8_t>(st), kVirtioBlkSOk);
  EXPECT_EQ(image.read(64 * 512, 4096), payload);
}

TEST_P(VirtioBlkTest, ZeroLengthTransferSucceeds) {
  BlkHarness h(config());
  Req r = h.request(kVirtioBlkTIn, kImageSectors, {}, {});  // at the very end: fine
  h.run();
  EXPECT_EQ(h.used().len, 1u);
  EXPECT_EQ(h.status(r), kVirtioBlkSOk);
}

// The invariant behind "no write is acknowledged before it reached the
// file": whenever a used element appears, that write's data is in the file.
TEST_P(VirtioBlkTest, WriteDataIsInFileWhenUsedElementAppears) {
  BlkHarness h(config());
  constexpr int kWrites = 64;
  std::vector<Req> reqs;
  std::vector<std::vector<uint8_t>> payloads;
  for (int i = 0; i < kWrites; ++i) {
    payloads.push_back(fill_bytes(4096, static_cast<uint8_t>(i * 3 + 1)));
    reqs.push_back(h.write(static_cast<uint64_t>(i) * 8, {payloads.back()}));
  }
  h.blk->process_queue(0);
  int seen = 0;
  auto check_new = [&] {
    while (auto u = h.drv->pop_used()) {
      int i = 0;
      while (i < kWrites && reqs[i].head != u->id) ++i;
      ASSERT_LT(i, kWrites);
      ASSERT_EQ(h.status(reqs[i]), kVirtioBlkSOk);
      ASSERT_EQ(image.read(static_cast<uint64_t>(i) * 4096, 4096), payloads[i])
          << "write " << i << " acknowledged before its data reached the file";
      ++seen;
    }
  };
  check_new();
  for (int round = 0; round < 10000 && seen < kWrites; ++round) {
    struct pollfd p {h.blk->completion_fd(), POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 5000), 1);
    h.blk->process_completions();
    check_new();
  }
  EXPECT_EQ(seen, kWrites);
}

// Reads that have to wait for the disk complete later, from kernel task
// work rather than inline: their completions must still wake the owner of
// completion_fd().
TEST_P(VirtioBlkTest, ReadsFromDiskComplete) {
  BlkHarness h(config());
  int fd = ::open(image.path().c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ::fdatasync(fd);
  ASSERT_EQ(::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
  ::close(fd);
  std::vector<Req> reqs;
  for (uint64_t s = 0; s < 64; ++s) reqs.push_back(h.read(s * 61 % kImageSectors, {512}));
  h.run();
  for (size_t i = 0; i < reqs.size(); ++i) {
    ASSERT_TRUE(h.drv->pop_used().has_value()) << i;
    EXPECT_EQ(h.status(reqs[i]), kVirtioBlkSOk);
    EXPECT_EQ(h.data(reqs[i]), pattern_bytes(i * 61 % kImageSectors * 512, 512)) << i;
  }
}

// More requests than the io_uring back-end can hold: the rest wait in the
// virtqueue and are taken as slots free up.
TEST_P(VirtioBlkTest, ManyRequestsWithBoundedInFlight) {
  BlkHarness h(config());
  constexpr int kReqs = 200;  // > 128 io_uring slots; indirect: 1 descriptor each
  std::vector<uint64_t> status(kReqs), data(kReqs);
  for (int i = 0; i < kReqs; ++i) {
    const uint64_t hdr = h.header(kVirtioBlkTIn, static_cast<uint64_t>(i));
    data[i] = h.drv->alloc(512, 512);
    status[i] = h.drv->alloc(1);
    h.drv->add_indirect_chain({{hdr, 16, false}, {data[i], 512, true}, {status[i], 1, true}});
  }
  h.blk->process_queue(0);
  EXPECT_LE(h.blk->requests_in_flight(), 128u);
  h.settle();
  int done = 0;
  while (h.drv->pop_used()) ++done;
  for (int round = 0; round < 100 && done < kReqs; ++round) {
    h.blk->process_queue(0);
    h.settle();
    while (h.drv->pop_used()) ++done;
  }
  EXPECT_EQ(done, kReqs);
  for (int i = 0; i < kReqs; ++i) {
    EXPECT_EQ(*h.mem.read_obj<uint8_t>(status[i]), kVirtioBlkSOk) << i;
    EXPECT_EQ(h.drv->read_bytes(data[i], 512), pattern_bytes(uint64_t(i) * 512, 512)) << i;
  }
}

// --- Flush, GET_ID --------------------------------------------------------------------

TEST_P(VirtioBlkTest, Flush) {
  BlkHarness h(config());
  h.write(5, {fill_bytes(512, 3)});
  Req f = h.request(kVirtioBlkTFlush, 0, {}, {});
  h.run();
  h.used();
  UsedElem u = h.used();
  EXPECT_EQ(u.id, f.head);
  EXPECT_EQ(u.len, 1u);
  EXPECT_EQ(h.status(f), kVirtioBlkSOk);
  // A flush carrying data is malformed.
  Req bad = h.request(kVirtioBlkTFlush, 0, {}, {512});
  h.run();
  h.used();
  EXPECT_EQ(h.status(bad), kVirtioBlkSIoErr);
}

TEST_P(VirtioBlkTest, GetId) {
  BlkHarness h(config(false, "my-disk-serial"));
  Req r = h.request(kVirtioBlkTGetId, 0, {}, {20});
  h.run();
  UsedElem u = h.used();
  EXPECT_EQ(u.len, 21u);
  EXPECT_EQ(h.status(r), kVirtioBlkSOk);
  std::vector<uint8_t> want(20, 0);
  std::memcpy(want.data(), "my-disk-serial", 14);
  EXPECT_EQ(h.data(r), want);

  // A shorter buffer gets a prefix.
  Req s = h.request(kVirtioBlkTGetId, 0, {}, {4});
  h.run();
  EXPECT_EQ(h.used().len, 5u);
  EXPECT_EQ(h.data(s), std::vector<uint8_t>({'m', 'y', '-', 'd'}));
}

TEST_P(VirtioBlkTest, DefaultSerialIsDerivedFromPath) {
  BlkHarness h(config());
  const std::string& s = h.blk->serial();
  EXPECT_LE(s.size(), 20u);
  EXPECT_EQ(s, default_blk_serial(image.path()));
  EXPECT_EQ(s.rfind(std::filesystem::path(image.path()).filename().string().substr(0, 11), 0), 0u)
      << s;
  EXPECT_NE(default_blk_serial("/a/disk.img"), default_blk_serial("/b/disk.img"));
  EXPECT_EQ(default_blk_serial("/a/disk.img"), default_blk_serial("/a/disk.img"));
  EXPECT_EQ(default_blk_serial("/x/a very long file name with spaces.img").size(), 20u);
  Req r = h.request(kVirtioBlkTGetId, 0, {}, {20});
  h.run();
  h.used();
  auto d = h.data(r);
  EXPECT_EQ(std::string(d.begin(), d.begin() + static_cast<long>(s.size())), s);
}

// --- Discard and write-zeroes -------------------------------------------------------------

TEST_P(VirtioBlkTest, WriteZeroesAndDiscardZeroTheRange) {
  BlkHarness h(config());
  const std::vector<uint8_t> zeros(8 * 512, 0);
  // Write-zeroes without unmap, with unmap, and a discard, each on 8 sectors
  // (4 KiB-aligned so a punched hole covers whole file system blocks).
  Req a = h.segment_request(kVirtioBlkTWriteZeroes, 8, 8, 0);
  Req b = h.segment_request(kVirtioBlkTWriteZeroes, 24, 8, kVirtioBlkWriteZeroesFlagUnmap);
  Req c = h.segment_request(kVirtioBlkTDiscard, 40, 8, 0);
  // Not 4 KiB aligned: still zeroes.
  Req d = h.segment_request(kVirtioBlkTWriteZeroes, 61, 3, 0);
  h.run();
  for (int i = 0; i < 4; ++i) EXPECT_EQ(h.used().len, 1u);
  for (const Req* r : {&a, &b, &c, &d}) EXPECT_EQ(h.status(*r), kVirtioBlkSOk);
  EXPECT_EQ(image.read(8 * 512, 8 * 512), zeros);
  EXPECT_EQ(image.read(24 * 512, 8 * 512), zeros);
  EXPECT_EQ(image.read(40 * 512, 8 * 512), zeros);
  EXPECT_EQ(image.read(61 * 512, 3 * 512), std::vector<uint8_t>(3 * 512, 0));
  // The neighbours are untouched.
  EXPECT_EQ(image.read(7 * 512, 512), pattern_bytes(7 * 512, 512));
  EXPECT_EQ(image.read(16 * 512, 512), pattern_bytes(16 * 512, 512));
  EXPECT_EQ(image.read(60 * 512, 512), pattern_bytes(60 * 512, 512));
  EXPECT_EQ(image.read(64 * 512, 512), pattern_bytes(64 * 512, 512));
  // The reads through the device agree.
  Req r = h.read(8, {4096});
  h.run();
  h.used();
  EXPECT_EQ(h.data(r), zeros);
  // File size unchanged.
  struct stat st {};
  ASSERT_EQ(::stat(image.path().c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), kImageSectors * 512);
}

// tmpfs can punch holes but not zero a range (FALLOC_FL_ZERO_RANGE): a
// write-zeroes without unmap falls back to writing zeroes, with unmap it
// punches; both read back as zeroes, on every later request too.
TEST_P(VirtioBlkTest, WriteZeroesFallsBackWhereTheFileSystemCannotZero) {
  if (!std::filesystem::is_directory("/dev/shm")) GTEST_SKIP() << "no /dev/shm";
  TempImage shm(kImageSectors * 512, "/dev/shm");
  BlkConfig c = config();
  c.path = shm.path();
  BlkHarness h(c);
  Req a = h.segment_request(kVirtioBlkTWriteZeroes, 8, 8, 0);
  Req b = h.segment_request(kVirtioBlkTWriteZeroes, 24, 8, kVirtioBlkWriteZeroesFlagUnmap);
  Req d = h.segment_request(kVirtioBlkTDiscard, 40, 8, 0);
  Req e = h.segment_request(kVirtioBlkTWriteZeroes, 100, 3, 0);  // again, mode now known
  static_assert(VirtioBlk::kMaxWriteZeroesSectors >= 2048);
  Req big = h.segment_request(kVirtioBlkTWriteZeroes, 1024, 2048, 0);  // 1 MiB
  h.run();
  for (int i = 0; i < 5; ++i) EXPECT_EQ(h.used().len, 1u);
  for (const Req* r : {&a, &b, &d, &e, &big}) EXPECT_EQ(h.status(*r), kVirtioBlkSOk);
  EXPECT_EQ(shm.read(8 * 512, 8 * 512), std::vector<uint8_t>(8 * 512, 0));
  EXPECT_EQ(shm.read(24 * 512, 8 * 512), std::vector<uint8_t>(8 * 512, 0));
  EXPECT_EQ(shm.read(40 * 512, 8 * 512), std::vector<uint8_t>(8 * 512, 0));
  EXPECT_EQ(shm.read(100 * 512, 3 * 512), std::vector<uint8_t>(3 * 512, 0));
  EXPECT_EQ(shm.read(1024 * 512, 2048 * 512), std::vector<uint8_t>(2048 * 512, 0));
  EXPECT_EQ(shm.read(103 * 512, 512), pattern_bytes(103 * 512, 512));
  EXPECT_EQ(shm.read(3072 * 512, 512), pattern_bytes(3072 * 512, 512));
}

TEST_P(VirtioBlkTest, DiscardAndWriteZeroesValidation) {
  BlkHarness h(config());
  struct Case {
    uint32_t type;
    uint64_t sector;
    uint32_t count;
    uint32_t flags;
    int segments;
    uint8_t want;
  } cases[] = {
      {kVirtioBlkTDiscard, 0, 8, kVirtioBlkWriteZeroesFlagUnmap, 1, kVirtioBlkSUnsupp},
      {kVirtioBlkTDiscard, 0, 8, 2, 1, kVirtioBlkSUnsupp},
      {kVirtioBlkTWriteZeroes, 0, 8, 0x80000000u, 1, kVirtioBlkSUnsupp},
      {kVirtioBlkTWriteZeroes, 0, 8, 0, 2, kVirtioBlkSIoErr},  // max_write_zeroes_seg 1
      {kVirtioBlkTDiscard, kImageSectors - 4, 8, 0, 1, kVirtioBlkSIoErr},
      {kVirtioBlkTWriteZeroes, ~uint64_t{0} - 2, 8, 0, 1, kVirtioBlkSIoErr},
      {kVirtioBlkTWriteZeroes, 0, VirtioBlk::kMaxWriteZeroesSectors + 1, 0, 1,
       kVirtioBlkSIoErr},
      {kVirtioBlkTDiscard, 0, 0, 0, 1, kVirtioBlkSOk},
  };
  for (const Case& c : cases) {
    Req r = h.segment_request(c.type, c.sector, c.count, c.flags, c.segments);
    h.run();
    EXPECT_EQ(h.used().len, 1u);
    EXPECT_EQ(h.status(r), c.want) << "type " << c.type << " sector " << c.sector << " count "
                                   << c.count << " flags " << c.flags;
  }
  EXPECT_EQ(image.read(0, 4096), pattern_bytes(0, 4096));
  // No segment at all.
  Req none = h.request(kVirtioBlkTDiscard, 0, {}, {});
  h.run();
  h.used();
  EXPECT_EQ(h.status(none), kVirtioBlkSIoErr);
}

TEST_P(VirtioBlkTest, DiscardNotNegotiatedIsUnsupported) {
  BlkHarness h(config(), ~(feature_bit(kVirtioBlkFDiscard) | feature_bit(kVirtioBlkFWriteZeroes)));
  Req r = h.segment_request(kVirtioBlkTDiscard, 0, 8, 0);
  Req w = h.segment_request(kVirtioBlkTWriteZeroes, 0, 8, 0);
  h.run();
  h.used();
  h.used();
  EXPECT_EQ(h.status(r), kVirtioBlkSUnsupp);
  EXPECT_EQ(h.status(w), kVirtioBlkSUnsupp);
  EXPECT_EQ(image.read(0, 4096), pattern_bytes(0, 4096));
}

// --- Read-only disks ------------------------------------------------------------------------

// The access mode of this process's open descriptions of `path`.
std::vector<int> open_modes(const std::string& path) {
  std::vector<int> modes;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    auto target = std::filesystem::read_symlink(e.path(), ec);
    if (ec || target != path) continue;
    std::string info = "/proc/self/fdinfo/" + e.path().filename().string();
    FILE* f = std::fopen(info.c_str(), "r");
    if (!f) continue;
    char line[256];
    while (std::fgets(line, sizeof line, f)) {
      unsigned flags;
      if (std::sscanf(line, "flags: %o", &flags) == 1) modes.push_back(flags & O_ACCMODE);
    }
    std::fclose(f);
  }
  return modes;
}

TEST_P(VirtioBlkTest, ReadonlyDiskRejectsWrites) {
  BlkHarness h(config(true));
  EXPECT_EQ(open_modes(image.path()), std::vector<int>{O_RDONLY});

  Req w = h.write(0, {fill_bytes(512, 1)});
  Req z = h.segment_request(kVirtioBlkTWriteZeroes, 8, 8, 0);
  Req d = h.segment_request(kVirtioBlkTDiscard, 16, 8, 0);
  Req f = h.request(kVirtioBlkTFlush, 0, {}, {});
  Req r = h.read(0, {512});
  h.run();
  for (int i = 0; i < 5; ++i) EXPECT_EQ(h.used().len, i == 4 ? 513u : 1u);
  EXPECT_EQ(h.status(w), kVirtioBlkSIoErr);
  EXPECT_EQ(h.status(z), kVirtioBlkSIoErr);
  EXPECT_EQ(h.status(d), kVirtioBlkSIoErr);
  EXPECT_EQ(h.status(f), kVirtioBlkSOk);
  EXPECT_EQ(h.status(r), kVirtioBlkSOk);
  EXPECT_EQ(h.data(r), pattern_bytes(0, 512));
  EXPECT_EQ(image.read(0, kImageSectors * 512), pattern_bytes(0, kImageSectors * 512));
}

// --- Malformed requests -----------------------------------------------------------------------

TEST_P(VirtioBlkTest, OutOfRangeSectors) {
  BlkHarness h(config());
  struct Case {
    uint32_t type;
    uint64_t sector;
    uint32_t len;
  } cases[] = {
      {kVirtioBlkTIn, kImageSectors, 512},
      {kVirtioBlkTIn, kImageSectors - 1, 1024},
      {kVirtioBlkTOut, kImageSectors, 512},
      {kVirtioBlkTIn, ~uint64_t{0}, 512},             // sector + 1 wraps
      {kVirtioBlkTOut, ~uint64_t{0} - 1, 1024},       // sector + 2 wraps
      {kVirtioBlkTIn, (~uint64_t{0} >> 9) + 1, 512},  // byte offset would wrap
      {kVirtioBlkTIn, 0, 100},                        // not whole sectors
      {kVirtioBlkTOut, 0, 513},
  };
  for (const Case& c : cases) {
    Req r = c.type == kVirtioBlkTIn ? h.read(c.sector, {c.len})
                                    : h.write(c.sector, {fill_bytes(c.len, 5)});
    h.run();
    EXPECT_EQ(h.used().len, 1u);
    EXPECT_EQ(h.status(r), kVirtioBlkSIoErr) << "sector " << c.sector << " len " << c.len;
    h.drv->reset_alloc();
  }
  EXPECT_EQ(image.read(0, 4096), pattern_bytes(0, 4096));
  // The last sector itself is fine.
  Req ok = h.read(kImageSectors - 1, {512});
  h.run();
  h.used();
  EXPECT_EQ(h.status(ok), kVirtioBlkSOk);
}

TEST_P(VirtioBlkTest, RequestWithoutStatusByte) {
  BlkHarness h(config());
  const uint64_t hdr = h.header(kVirtioBlkTOut, 0);
  const uint64_t data = h.drv->alloc_bytes(fill_bytes(512, 1));
  uint16_t head = h.drv->add_chain({{hdr, 16, false}, {data, 512, false}});
  h.run();
  UsedElem u = h.used();
  EXPECT_EQ(u.id, head);
  EXPECT_EQ(u.len, 0u);
  EXPECT_EQ(h.blk->stats().bad_chains, 1u);
  EXPECT_EQ(image.read(0, 512), pattern_bytes(0, 512));  // not written
}

TEST_P(VirtioBlkTest, HeaderInWritableBuffer) {
  BlkHarness h(config());
  const uint64_t hdr = h.header(kVirtioBlkTOut, 0);
  const uint64_t st = h.drv->alloc(1);
  uint16_t head = h.drv->add_chain({{hdr, 16, true}, {st, 1, true}});
  h.run();
  UsedElem u = h.used();
  EXPECT_EQ(u.id, head);
  EXPECT_EQ(u.len, 1u);
  EXPECT_EQ(*h.mem.read_obj<uint8_t>(st), kVirtioBlkSIoErr);
  // A header shorter than 16 bytes.
  const uint64_t hdr2 = h.header(kVirtioBlkTIn, 0);
  const uint64_t st2 = h.drv->alloc(1);
  h.drv->add_chain({{hdr2, 8, false}, {st2, 1, true}});
  h.run();
  h.used();
  EXPECT_EQ(*h.mem.read_obj<uint8_t>(st2), kVirtioBlkSIoErr);
}

TEST_P(VirtioBlkTest, DataInTheWrongDirection) {
  BlkHarness h(config());
  // A read whose data buffer is device-readable, a write whose data buffer
  // is device-writable.
  Req r = h.request(kVirtioBlkTIn, 0, {fill_bytes(512, 1)}, {});
  Req w = h.request(kVirtioBlkTOut, 0, {}, {512});
  h.run();
  h.used();
  h.used();
  EXPECT_EQ(h.status(r), kVirtioBlkSIoErr);
  EXPECT_EQ(h.status(w), kVirtioBlkSIoErr);
  EXPECT_EQ(image.read(0, 512), pattern_bytes(0, 512));
}

TEST_P(VirtioBlkTest, UnknownTypeIsUnsupported) {
  BlkHarness h(config());
  for (uint32_t type : {2u, 3u, kVirtioBlkTGetLifetime, kVirtioBlkTSecureErase, 99u,
                        0xffffffffu}) {
    Req r = h.request(type, 0, {}, {512});
    h.run();
    EXPECT_EQ(h.used().len, 1u);
    EXPECT_EQ(h.status(r), kVirtioBlkSUnsupp) << type;
  }
  EXPECT_EQ(h.blk->stats().unsupported, 6u);
}

TEST_P(VirtioBlkTest, MalformedChainCompletesWithLengthZero) {
  BlkHarness h(config());
  const uint64_t hdr = h.header(kVirtioBlkTIn, 0);
  uint16_t head = h.drv->add_chain({{hdr, 16, false}, {kMemSize - 8, 512, true}});  // outside RAM
  h.run();
  UsedElem u = h.used();
  EXPECT_EQ(u.id, head);
  EXPECT_EQ(u.len, 0u);
  // The queue keeps working.
  Req r = h.read(0, {512});
  h.run();
  h.used();
  EXPECT_EQ(h.status(r), kVirtioBlkSOk);
}

// --- Notifications ---------------------------------------------------------------------------

TEST_P(VirtioBlkTest, InterruptOnlyWhenTheDriverWantsIt) {
  BlkHarness h(config());  // EVENT_IDX negotiated
  h.read(0, {512});
  h.run();
  EXPECT_EQ(h.irq->queue_count(0), 1u);  // first one always
  h.drv->pop_used();
  // used_event = 5: no interrupt until used->idx passes it.
  h.drv->set_used_event(5);
  for (int i = 0; i < 4; ++i) {
    h.read(0, {512});
    h.run();
  }
  EXPECT_EQ(h.irq->queue_count(0), 1u);  // used idx now 5: event 5 not yet crossed
  h.read(0, {512});
  h.run();
  EXPECT_EQ(h.irq->queue_count(0), 2u);  // 5 -> 6 crosses used_event 5
}

TEST_P(VirtioBlkTest, NoInterruptFlagWithoutEventIdx) {
  BlkHarness h(config(), ~feature_bit(kVirtioFEventIdx));
  h.drv->set_avail_flags(kVirtqAvailFNoInterrupt);
  h.read(0, {512});
  h.run();
  EXPECT_EQ(h.irq->queue_count(0), 0u);
  h.drv->set_avail_flags(0);
  h.read(0, {512});
  h.run();
  EXPECT_EQ(h.irq->queue_count(0), 1u);
}

// --- Life cycle ----------------------------------------------------------------------------------

TEST_P(VirtioBlkTest, ResetDropsInFlightRequestsAndReactivates) {
  BlkHarness h(config());
  for (int i = 0; i < 16; ++i) h.write(static_cast<uint64_t>(i) * 8, {fill_bytes(4096, 1)});
  h.blk->process_queue(0);
  h.blk->reset();  // io_uring: waits for the kernel, then forgets them
  EXPECT_EQ(h.blk->requests_in_flight(), 0u);
  h.blk->process_queue(0);  // inactive: ignored
  // Activate again on fresh rings.
  h.q.reset();
  h.drv = h.new_driver();  // zeroes the rings
  h.activate(~uint64_t{0});
  Req r = h.read(0, {512});
  h.run();
  EXPECT_EQ(h.used().id, r.head);
  EXPECT_EQ(h.status(r), kVirtioBlkSOk);
}

TEST_P(VirtioBlkTest, ActivateRejectsWrongQueueCount) {
  VirtioBlk blk(config());
  auto mem = GuestMemory::create({{0, 1 << 20}});
  Queue a, b;
  auto irq = std::make_shared<FakeInterrupt>();
  EXPECT_FALSE(blk.activate(mem, kAllRingFeatures, {}, irq));
  EXPECT_FALSE(blk.activate(mem, kAllRingFeatures, {&a, &b}, irq));
  EXPECT_FALSE(blk.activate(mem, kAllRingFeatures, {&a}, nullptr));
}

TEST_P(VirtioBlkTest, BrokenQueueAsksForADeviceReset) {
  BlkHarness h(config());
  // An available index more than Queue Size ahead: nothing sensible can be
  // returned, so the device asks the transport for DEVICE_NEEDS_RESET, once.
  h.drv->set_avail_idx(kQSize + 5);
  h.run();
  EXPECT_TRUE(h.q.broken());
  EXPECT_EQ(h.irq->needs_reset_count(), 1u);
  h.run();
  EXPECT_EQ(h.irq->needs_reset_count(), 1u);
  EXPECT_EQ(h.blk->stats().completed, 0u);
}

TEST_P(VirtioBlkTest, MultipleQueuesEachCompleteOnTheirOwnRing) {
  BlkConfig c = config();
  c.queues = 2;
  VirtioBlk blk(c);
  EXPECT_EQ(blk.num_queues(), 2);
  EXPECT_TRUE(blk.device_features() & feature_bit(kVirtioBlkFMq));
  uint16_t nq = 0;
  blk.read_config(VirtioBlkConfigLayout::kNumQueues,
                  std::span<uint8_t>(reinterpret_cast<uint8_t*>(&nq), 2));
  EXPECT_EQ(nq, 2);

  auto mem = GuestMemory::create({{0, kMemSize}});
  QueueDriver d0(mem, kQSize, 0x1000, 0x20000, 0x200000);
  QueueDriver d1(mem, kQSize, 0x10000, 0x400000, 0x200000);
  Queue q0{kQSize}, q1{kQSize};
  d0.configure(q0);
  d1.configure(q1);
  auto irq = std::make_shared<FakeInterrupt>();
  EXPECT_FALSE(blk.activate(mem, blk.device_features(), {&q0}, irq));  // one queue short
  ASSERT_TRUE(blk.activate(mem, blk.device_features(), {&q0, &q1}, irq));

  auto settle = [&] {
    for (int i = 0; i < 10000 && blk.requests_in_flight() > 0; ++i) {
      struct pollfd p {blk.completion_fd(), POLLIN, 0};
      ASSERT_EQ(::poll(&p, 1, 5000), 1) << "no completion within 5 s";
      blk.process_completions();
    }
  };
  // A 512-byte read of `sector` on driver d: returns (head, data gpa, status gpa).
  auto post_read = [](QueueDriver& d, uint64_t sector) {
    uint8_t h[16] = {};
    const uint32_t type = kVirtioBlkTIn;
    std::memcpy(h, &type, 4);
    std::memcpy(h + 8, &sector, 8);
    const uint64_t hdr = d.alloc_bytes(std::vector<uint8_t>(h, h + 16));
    const uint64_t data = d.alloc(512, 512);
    const uint64_t status = d.alloc(1);
    d.fill(status, 1, 0xff);
    const uint16_t head = d.add_chain({{hdr, 16, false}, {data, 512, true}, {status, 1, true}});
    return std::tuple{head, data, status};
  };

  // The next used element of driver d completes the read `r` of `sector`.
  auto expect_read_done = [](QueueDriver& d, const auto& r, uint64_t sector) {
    const auto& [head, data, status] = r;
    auto u = d.pop_used();
    ASSERT_TRUE(u.has_value());
    EXPECT_EQ(u->id, head);
    EXPECT_EQ(d.read_bytes(status, 1)[0], kVirtioBlkSOk);
    EXPECT_EQ(d.read_bytes(data, 512), pattern_bytes(sector * 512, 512));
  };

  // A request on queue 1 completes on queue 1's ring, with queue 1's interrupt.
  const auto r1 = post_read(d1, 7);
  blk.process_queue(1);
  settle();
  expect_read_done(d1, r1, 7);
  EXPECT_FALSE(d0.pop_used().has_value());
  EXPECT_EQ(irq->queue_count(1), 1u);
  EXPECT_EQ(irq->queue_count(0), 0u);

  // A kick for queue 0 serves queue 0 only; a kick for a queue the device
  // does not have is ignored.
  const auto r0 = post_read(d0, 9);
  const auto r1b = post_read(d1, 11);
  blk.process_queue(5);
  blk.process_queue(0);
  settle();
  expect_read_done(d0, r0, 9);
  EXPECT_FALSE(d1.pop_used().has_value());
  EXPECT_EQ(irq->queue_count(0), 1u);
  blk.process_queue(1);
  settle();
  expect_read_done(d1, r1b, 11);

  // A driver without VIRTIO_BLK_F_MQ enables queue 0 only: that activates.
  blk.reset();
  Queue only0{kQSize}, unused1{kQSize};
  QueueDriver e0(mem, kQSize, 0x1000, 0x20000, 0x200000);
  e0.configure(only0);
  EXPECT_TRUE(blk.activate(mem, blk.device_features() & ~feature_bit(kVirtioBlkFMq),
                           {&only0, &unused1}, irq));
}

TEST_P(VirtioBlkTest, WorksOnTheEventLoop) {
  EventLoop loop;
  loop.start();
  BlkHarness h(config(), ~uint64_t{0}, &loop);
  auto wait_used = [&](uint16_t n) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (h.drv->pending_used() < n && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return h.drv->pending_used() >= n;
  };
  // Requests in flight together may complete in any order (as on any
  // virtio-blk device), so the read goes after the write has completed.
  auto payload = fill_bytes(8192, 42);
  h.write(100, {payload});
  loop.post([&] { h.blk->process_queue(0); });
  ASSERT_TRUE(wait_used(1));
  EXPECT_EQ(image.read(100 * 512, 8192), payload);
  Req r = h.read(100, {4096, 4096});
  loop.post([&] { h.blk->process_queue(0); });
  ASSERT_TRUE(wait_used(2));
  EXPECT_EQ(h.status(r), kVirtioBlkSOk);
  EXPECT_EQ(h.data(r), payload);
  EXPECT_GE(h.irq->queue_count(0), 1u);
  ASSERT_TRUE(h.drv->pop_used());
  ASSERT_TRUE(h.drv->pop_used());

  // A full ring (256 one-descriptor requests) uses up one pass's budget;
  // the rest of the work continues from a posted continuation.
  std::vector<uint64_t> status;
  for (int i = 0; i < kQSize; ++i) {
    const uint64_t hdr = h.header(kVirtioBlkTIn, static_cast<uint64_t>(i));
    const uint64_t data = h.drv->alloc(512, 512);
    status.push_back(h.drv->alloc(1));
    h.drv->add_indirect_chain({{hdr, 16, false}, {data, 512, true}, {status.back(), 1, true}});
  }
  loop.post([&] { h.blk->process_queue(0); });
  ASSERT_TRUE(wait_used(kQSize));
  loop.stop();
  for (uint64_t st : status) EXPECT_EQ(*h.mem.read_obj<uint8_t>(st), kVirtioBlkSOk);
}

// --- Opening the image -----------------------------------------------------------------------

TEST_P(VirtioBlkTest, SecondWriterIsRefused) {
  auto first = std::make_unique<VirtioBlk>(config());
  try {
    VirtioBlk second(config());
    FAIL() << "a second writer opened the image";
  } catch (const UsageError& e) {
    EXPECT_EQ(std::string(e.what()), "disk " + image.path() + " is in use by another process");
  }
  // A reader cannot share it with a writer either.
  EXPECT_THROW(VirtioBlk{config(true)}, UsageError);
  first.reset();
  // Readers share; a writer then waits for them to go.
  auto r1 = std::make_unique<VirtioBlk>(config(true));
  EXPECT_NO_THROW(VirtioBlk{config(true)});
  EXPECT_THROW(VirtioBlk{config()}, UsageError);
  r1.reset();
  EXPECT_NO_THROW(VirtioBlk{config()});
}

TEST_P(VirtioBlkTest, SizeNotAMultipleOf512IsRoundedDown) {
  ASSERT_EQ(::truncate(image.path().c_str(), 10 * 512 + 100), 0);
  VirtioBlk blk(config());
  EXPECT_EQ(blk.capacity_sectors(), 10u);
}

TEST_P(VirtioBlkTest, UnusableImagesAreRefused) {
  ASSERT_EQ(::truncate(image.path().c_str(), 511), 0);
  EXPECT_THROW(VirtioBlk{config()}, UsageError);
  BlkConfig missing = config();
  missing.path = image.path() + ".does-not-exist";
  EXPECT_THROW(VirtioBlk{missing}, UsageError);
  BlkConfig dir = config();
  dir.path = "/tmp";
  dir.readonly = true;
  EXPECT_THROW(VirtioBlk{dir}, UsageError);
  BlkConfig bad_serial = config();
  bad_serial.serial = std::string(21, 'x');
  ASSERT_EQ(::truncate(image.path().c_str(), 4096), 0);
  EXPECT_THROW(VirtioBlk{bad_serial}, UsageError);
}

// Refuses io_uring_setup with EPERM (as container runtimes' seccomp
// profiles do), then opens `c`; exits 0 if that failed with an error naming
// the engine, the errno and the image.
[[noreturn]] void open_without_io_uring(const BlkConfig& c) {
  struct sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = {static_cast<unsigned short>(std::size(filter)), filter};
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
      ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
    std::_Exit(3);
  }
  try {
    VirtioBlk blk(c);
  } catch (const Error& e) {
    const std::string m = e.what();
    std::fprintf(stderr, "%s\n", m.c_str());
    const bool named = m.find("engine=io_uring") != std::string::npos &&
                       m.find("Operation not permitted") != std::string::npos &&
                       m.find(c.path) != std::string::npos;
    std::_Exit(named ? 0 : 1);
  }
  std::_Exit(2);
}

// Where io_uring is not permitted, engine=io_uring fails at start-up with
// an error that names it.
TEST(VirtioBlkUring, SetupFailureNamesTheEngine) {
  TempImage image(64 * 512);
  BlkConfig c;
  c.path = image.path();
  c.engine = BlockEngine::kIoUring;
  EXPECT_EXIT(open_without_io_uring(c), ::testing::ExitedWithCode(0), "engine=io_uring");
}

INSTANTIATE_TEST_SUITE_P(Engines, VirtioBlkTest,
                         ::testing::Values(BlockEngine::kSync, BlockEngine::kIoUring),
                         [](const ::testing::TestParamInfo<BlockEngine>& info) {
                           return std::string(to_string(info.param));
                         });

// --- --disk parsing ----------------------------------------------------------------------------

TEST(BlkConfigParse, KeysAndValues) {
  BlkConfig c = parse_blk_config("path=/var/img/root.ext4");
  EXPECT_EQ(c.path, "/var/img/root.ext4");
  EXPECT_FALSE(c.readonly);
  EXPECT_EQ(c.engine, BlockEngine::kSync);
  EXPECT_EQ(c.serial, "");

  c = parse_blk_config("path=data.img,readonly=on,engine=io_uring,serial=abc");
  EXPECT_EQ(c.path, "data.img");
  EXPECT_TRUE(c.readonly);
  EXPECT_EQ(c.engine, BlockEngine::kIoUring);
  EXPECT_EQ(c.serial, "abc");

  c = parse_blk_config("disk.img,readonly=off,engine=sync");
  EXPECT_EQ(c.path, "disk.img");
  EXPECT_FALSE(c.readonly);

  c = parse_blk_config("path=a,,b.img,id=x");
  EXPECT_EQ(c.path, "a,b.img");
  EXPECT_EQ(c.serial, "x");
  EXPECT_EQ(c.queues, 0u);  // the VMM picks

  EXPECT_EQ(parse_blk_config("path=a,queues=4").queues, 4u);
  EXPECT_EQ(parse_blk_config("path=a,queues=64").queues, 64u);
}

TEST(BlkConfigParse, Errors) {
  for (const char* bad : {"", "readonly=on", "path=", "path=a,readonly=maybe", "path=a,engine=aio",
                          "path=a,size=3", "path=a,path=b", "path=a,serial=123456789012345678901",
                          "path=a,junk", "path=a,queues=0", "path=a,queues=65",
                          "path=a,queues=two", "path=a,queues=-1", "path=a,queues=",
                          "path=a,queues=2,queues=2"}) {
    EXPECT_THROW(parse_blk_config(bad), UsageError) << bad;
  }
}

}  // namespace
}  // namespace rz::virtio
