// Unit tests for virtio-net (src/virtio/net.h) and the TAP back-end
// (src/virtio/tap.h). The device runs on a real EventLoop against a mock
// guest; its back-end is one end of a socketpair(AF_UNIX, SOCK_SEQPACKET),
// which keeps frame boundaries the way a TAP fd does, and the test plays the
// network on the other end. The Tap tests need root and /dev/net/tun and
// skip (with the reason) otherwise.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "memory/guest_memory.h"
#include "util/error.h"
#include "util/event_loop.h"
#include "virtio/net.h"
#include "virtio/tap.h"
#include "virtio/virtio_defs.h"
#include "virtio_test_driver.h"

namespace rz::virtio {
namespace {

using memory::GuestMemory;
using test::FakeInterrupt;
using test::QueueDriver;
using test::Seg;
using test::UsedElem;
using namespace std::chrono_literals;

constexpr uint64_t kMemSize = 8 << 20;
constexpr uint16_t kQueueSize = 256;
constexpr uint64_t kRxRing = 0x1000;
constexpr uint64_t kTxRing = 0x4000;
constexpr uint64_t kRxData = 0x10000;
constexpr uint64_t kRxDataSize = 0x300000;
constexpr uint64_t kTxData = 0x400000;
constexpr uint64_t kTxDataSize = 0x300000;

constexpr uint64_t kBaseFeatures = feature_bit(kVirtioFVersion1);
constexpr uint64_t kMrg = feature_bit(kNetFMrgRxbuf);
constexpr uint64_t kEventIdx = feature_bit(kVirtioFEventIdx);
constexpr uint64_t kGuestCsum = feature_bit(kNetFGuestCsum);

// What the socketpair back-end saw of set_offloads(); shared with the test
// after the back-end moved into the device.
struct FakeState {
  std::atomic<int> offload_calls{0};
  NetOffloads last_offloads;
};

class SocketPairBackend : public NetBackend {
 public:
  SocketPairBackend(int fd, std::shared_ptr<FakeState> state)
      : fd_(fd), state_(std::move(state)) {}
  ~SocketPairBackend() override { ::close(fd_); }
  int fd() const override { return fd_; }
  ssize_t read_frame(std::span<const iovec> iov) override {
    const ssize_t r = ::readv(fd_, iov.data(), static_cast<int>(iov.size()));
    return r < 0 ? -errno : r;
  }
  ssize_t write_frame(std::span<const iovec> iov) override {
    const ssize_t r = ::writev(fd_, iov.data(), static_cast<int>(iov.size()));
    return r < 0 ? -errno : r;
  }
  void set_offloads(const NetOffloads& o) override {
    state_->last_offloads = o;
    ++state_->offload_calls;
  }
  std::string describe() const override { return "socketpair"; }

 private:
  int fd_;
  std::shared_ptr<FakeState> state_;
};

// A frame as the guest or the network hands it over: a 12-byte vnet header
// (flags in byte 0), then an Ethernet header and a payload derived from `seed`.
std::vector<uint8_t> make_frame(size_t total_len, uint32_t seed, uint8_t hdr_flags = 0) {
  std::vector<uint8_t> f(total_len);
  for (size_t i = 0; i < total_len; ++i) f[i] = static_cast<uint8_t>((i * 131 + seed * 7 + 3) ^ (seed >> 8));
  std::memset(f.data(), 0, std::min<size_t>(kVnetHdrLen, total_len));
  if (total_len > 0) f[0] = hdr_flags;
  if (total_len >= kVnetHdrLen + 14) {
    f[kVnetHdrLen + 12] = 0x88;  // ethertype 0x88b5 (local experimental)
    f[kVnetHdrLen + 13] = 0xb5;
    std::memcpy(&f[kVnetHdrLen + 14], &seed, std::min<size_t>(4, total_len - kVnetHdrLen - 14));
  }
  return f;
}

bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds limit = 5s) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

uint16_t le16(const std::vector<uint8_t>& v, size_t at) { return static_cast<uint16_t>(v[at] | v[at + 1] << 8); }

class VirtioNetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    peer_ = sv[1];
    state_ = std::make_shared<FakeState>();
    loop_.start();
    NetConfig cfg;
    cfg.mac = {0x06, 0x00, 0xac, 0x10, 0x00, 0x02};
    dev_ = std::make_unique<VirtioNet>(loop_, std::make_unique<SocketPairBackend>(sv[0], state_), cfg);
    rxd_.configure(rxq_);
    txd_.configure(txq_);
  }
  void TearDown() override {
    if (dev_) on_loop([&] { dev_->reset(); });
    dev_.reset();
    loop_.stop();
    if (peer_ >= 0) ::close(peer_);
  }

  // Runs fn on the loop thread and waits for it: the device's threading rule.
  void on_loop(std::function<void()> fn) {
    std::packaged_task<void()> task(std::move(fn));
    auto done = task.get_future();
    loop_.post([&task] { task(); });
    ASSERT_EQ(done.wait_for(10s), std::future_status::ready) << "event loop stuck";
    done.get();
  }
  bool activate(uint64_t features) {
    bool ok = false;
    on_loop([&] { ok = dev_->activate(mem_, features, {&rxq_, &txq_}, irq_); });
    return ok;
  }
  void kick(uint16_t q) {
    on_loop([&] { dev_->process_queue(q); });
  }

  // The network side.
  void peer_send(const std::vector<uint8_t>& frame) {
    ASSERT_EQ(::send(peer_, frame.data(), frame.size(), 0), static_cast<ssize_t>(frame.size()))
        << strerror(errno);
  }
  std::optional<std::vector<uint8_t>> peer_recv(int timeout_ms = 2000) {
    pollfd p{peer_, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) != 1) return std::nullopt;
    std::vector<uint8_t> buf(kMaxFrameWithHeader + 4096);
    const ssize_t r = ::recv(peer_, buf.data(), buf.size(), MSG_DONTWAIT);
    if (r < 0) return std::nullopt;
    buf.resize(static_cast<size_t>(r));
    return buf;
  }

  // Guest side: one device-readable buffer per segment of `frame`.
  uint16_t tx_post(const std::vector<uint8_t>& frame, const std::vector<size_t>& split = {}) {
    std::vector<Seg> segs;
    size_t off = 0;
    std::vector<size_t> pieces = split.empty() ? std::vector<size_t>{frame.size()} : split;
    for (size_t len : pieces) {
      std::vector<uint8_t> part(frame.begin() + off, frame.begin() + off + len);
      segs.push_back({txd_.alloc_bytes(part), static_cast<uint32_t>(len), false});
      off += len;
    }
    return txd_.add_chain(segs);
  }
  // A receive chain of one writable buffer; remembers where it lives.
  uint16_t rx_post(uint32_t len) {
    const uint64_t gpa = rxd_.alloc(len);
    const uint16_t head = rxd_.add_chain({{gpa, len, true}});
    rx_bufs_[head] = {gpa, len};
    return head;
  }
  std::optional<UsedElem> rx_wait_used(std::chrono::milliseconds limit = 3s) {
    if (!wait_until([&] { return rxd_.pending_used() > 0; }, limit)) return std::nullopt;
    return rxd_.pop_used();
  }
  std::vector<uint8_t> rx_bytes(const UsedElem& e) {
    auto [gpa, len] = rx_bufs_.at(static_cast<uint16_t>(e.id));
    EXPECT_LE(e.len, len);
    return rxd_.read_bytes(gpa, e.len);
  }
  NetStats stats() { return dev_->stats(); }

  GuestMemory mem_ = GuestMemory::create({{0, kMemSize}});
  EventLoop loop_;
  std::shared_ptr<FakeState> state_;
  std::unique_ptr<VirtioNet> dev_;
  int peer_ = -1;
  Queue rxq_{kQueueSize};
  Queue txq_{kQueueSize};
  QueueDriver rxd_{mem_, kQueueSize, kRxRing, kRxData, kRxDataSize};
  QueueDriver txd_{mem_, kQueueSize, kTxRing, kTxData, kTxDataSize};
  std::shared_ptr<FakeInterrupt> irq_ = std::make_shared<FakeInterrupt>();
  std::map<uint16_t, std::pair<uint64_t, uint32_t>> rx_bufs_;
};

// --- Identity, features, configuration --------------------------------------------

TEST_F(VirtioNetTest, IdentityAndFeatures) {
  EXPECT_EQ(dev_->device_type(), kDeviceIdNet);
  EXPECT_EQ(dev_->name(), "virtio-net");
  EXPECT_EQ(dev_->num_queues(), 2);
  EXPECT_EQ(dev_->queue_max_size(0), 256);
  const uint64_t f = dev_->device_features();
  for (unsigned bit : {kVirtioFVersion1, kVirtioFIndirectDesc, kVirtioFEventIdx, kNetFMac,
                       kNetFStatus, kNetFCsum, kNetFGuestCsum, kNetFGuestTso4, kNetFGuestTso6,
                       kNetFGuestEcn, kNetFHostTso4, kNetFHostTso6, kNetFHostEcn, kNetFMrgRxbuf}) {
    EXPECT_TRUE(f & feature_bit(bit)) << "bit " << bit;
  }
  for (unsigned bit : {kNetFCtrlVq, kNetFMq, kNetFMtu, kNetFGuestUfo, kNetFHostUfo,
                       kNetFCtrlGuestOffloads, kNetFSpeedDuplex, kVirtioFRingPacked}) {
    EXPECT_FALSE(f & feature_bit(bit)) << "bit " << bit;
  }
}

TEST_F(VirtioNetTest, ConfigSpace) {
  std::vector<uint8_t> cfg(kNetConfigSize);
  dev_->read_config(0, cfg);
  EXPECT_EQ(std::vector<uint8_t>(cfg.begin(), cfg.begin() + 6),
            (std::vector<uint8_t>{0x06, 0x00, 0xac, 0x10, 0x00, 0x02}));
  EXPECT_EQ(le16(cfg, kNetCfgStatus), kNetSLinkUp);
  EXPECT_EQ(le16(cfg, kNetCfgMaxVirtqueuePairs), 1);
  EXPECT_EQ(le16(cfg, kNetCfgMtu), 0);

  // Piecewise reads (a driver reads the MAC byte by byte), beyond the end.
  uint8_t b = 0;
  dev_->read_config(3, std::span<uint8_t>(&b, 1));
  EXPECT_EQ(b, 0x10);
  std::vector<uint8_t> tail(8, 0xaa);
  dev_->read_config(kNetConfigSize - 2, tail);
  EXPECT_EQ(tail[2], 0);
  EXPECT_EQ(tail[7], 0);
  dev_->read_config(UINT64_MAX - 1, tail);  // no wrap-around into the start
  EXPECT_EQ(tail, std::vector<uint8_t>(8, 0));
  // Writes are ignored.
  std::vector<uint8_t> junk(6, 0xff);
  dev_->write_config(0, junk);
  dev_->read_config(0, cfg);
  EXPECT_EQ(cfg[0], 0x06);
}

TEST(VirtioNetConfig, MtuOfferedOnlyWhenSet) {
  EventLoop loop;
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK, 0, sv), 0);
  NetConfig cfg;
  cfg.mtu = 9000;
  VirtioNet dev(loop, std::make_unique<SocketPairBackend>(sv[0], std::make_shared<FakeState>()), cfg);
  EXPECT_TRUE(dev.device_features() & feature_bit(kNetFMtu));
  uint8_t mtu[2];
  dev.read_config(kNetCfgMtu, mtu);
  EXPECT_EQ(mtu[0] | mtu[1] << 8, 9000);
  ::close(sv[1]);

  cfg.mtu = 20;
  EXPECT_THROW(VirtioNet(loop, std::make_unique<SocketPairBackend>(-1, std::make_shared<FakeState>()), cfg),
               UsageError);
  cfg.mtu.reset();
  cfg.queue_size = 100;
  EXPECT_THROW(VirtioNet(loop, std::make_unique<SocketPairBackend>(-1, std::make_shared<FakeState>()), cfg),
               Error);
  EXPECT_THROW(VirtioNet(loop, nullptr, NetConfig{}), Error);
}

TEST(VirtioNetMac, ParseAndFormat) {
  auto m = parse_mac("06:00:ac:10:00:02");
  ASSERT_TRUE(m);
  EXPECT_EQ(*m, (MacAddress{0x06, 0x00, 0xac, 0x10, 0x00, 0x02}));
  EXPECT_EQ(format_mac(*m), "06:00:ac:10:00:02");
  EXPECT_EQ(parse_mac("52-54-00-AB-cd-EF"), (MacAddress{0x52, 0x54, 0x00, 0xab, 0xcd, 0xef}));
  for (const char* bad : {"", "06:00:ac:10:00", "06:00:ac:10:00:02:", "06:00:ac:10:00:0g",
                          "06-00:ac:10:00:02", "6:0:ac:10:00:02", "06:00:ac:10:00:002",
                          "06.00.ac.10.00.02", " 06:00:ac:10:00:02"}) {
    EXPECT_FALSE(parse_mac(bad)) << bad;
  }
}

TEST(VirtioNetMac, RandomIsUnicastLocallyAdministered) {
  const MacAddress a = random_mac();
  const MacAddress b = random_mac();
  EXPECT_EQ(a[0] & 0x03, 0x02);
  EXPECT_EQ(b[0] & 0x03, 0x02);
  EXPECT_NE(a, b);  // 46 random bits
  EXPECT_EQ(parse_mac(format_mac(a)), a);
}

TEST(VirtioNetOffloads, FromFeaturesAndTunFlags) {
  EXPECT_EQ(offloads_from_features(0), NetOffloads{});
  // TSO without checksum offload is meaningless: not used.
  EXPECT_EQ(offloads_from_features(feature_bit(kNetFGuestTso4)), NetOffloads{});
  const uint64_t all = feature_bit(kNetFGuestCsum) | feature_bit(kNetFGuestTso4) |
                       feature_bit(kNetFGuestTso6) | feature_bit(kNetFGuestEcn);
  const NetOffloads o = offloads_from_features(all);
  EXPECT_TRUE(o.csum && o.tso4 && o.tso6 && o.tso_ecn);
  EXPECT_FALSE(o.ufo);
  EXPECT_EQ(Tap::tun_offload_flags(o), unsigned{TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN});
  EXPECT_EQ(Tap::tun_offload_flags(offloads_from_features(feature_bit(kNetFGuestCsum))),
            unsigned{TUN_F_CSUM});
  EXPECT_EQ(Tap::tun_offload_flags({}), 0u);
}

TEST_F(VirtioNetTest, ActivateSetsOffloadsAndResetClearsThem) {
  ASSERT_TRUE(activate(kBaseFeatures | kGuestCsum | feature_bit(kNetFGuestTso4)));
  EXPECT_TRUE(state_->last_offloads.csum);
  EXPECT_TRUE(state_->last_offloads.tso4);
  EXPECT_FALSE(state_->last_offloads.tso6);
  on_loop([&] { dev_->reset(); });
  EXPECT_EQ(state_->last_offloads, NetOffloads{});
}

TEST_F(VirtioNetTest, ActivateRejectsUnusableQueues) {
  txq_.set_ready(false);
  EXPECT_FALSE(activate(kBaseFeatures));
  txq_.set_ready(true);
  rxq_.set_size(3);
  EXPECT_FALSE(activate(kBaseFeatures));
  rxq_.set_size(kQueueSize);
  EXPECT_TRUE(activate(kBaseFeatures));
}

// --- Transmit -----------------------------------------------------------------------

TEST_F(VirtioNetTest, TxSingleFrameWithHeader) {
  ASSERT_TRUE(activate(kBaseFeatures));
  const auto frame = make_frame(kVnetHdrLen + 60, 1, /*flags=*/1);
  const uint16_t head = tx_post(frame);
  kick(kNetTxQueue);
  auto got = peer_recv();
  ASSERT_TRUE(got);
  EXPECT_EQ(*got, frame);  // the header passes through unchanged
  auto used = txd_.pop_used();
  ASSERT_TRUE(used);
  EXPECT_EQ(used->id, head);
  EXPECT_EQ(used->len, 0u);
  EXPECT_GE(irq_->queue_count(kNetTxQueue), 1u);
  EXPECT_EQ(stats().tx_frames, 1u);
  EXPECT_EQ(stats().tx_bytes, frame.size());
}

TEST_F(VirtioNetTest, TxMultiBufferChain) {
  ASSERT_TRUE(activate(kBaseFeatures | feature_bit(kVirtioFIndirectDesc)));
  const auto frame = make_frame(kVnetHdrLen + 3000, 2);
  // Header alone, then the frame in uneven pieces (as Linux does with frags).
  tx_post(frame, {kVnetHdrLen, 14, 1000, 1, 3000 - 14 - 1000 - 1});
  // And one through an indirect table, the header split across buffers.
  const auto frame2 = make_frame(kVnetHdrLen + 200, 3);
  std::vector<Seg> segs;
  segs.push_back({txd_.alloc_bytes({frame2.begin(), frame2.begin() + 5}), 5, false});
  segs.push_back({txd_.alloc_bytes({frame2.begin() + 5, frame2.end()}),
                  static_cast<uint32_t>(frame2.size() - 5), false});
  txd_.add_indirect_chain(segs);
  kick(kNetTxQueue);
  auto got = peer_recv();
  ASSERT_TRUE(got);
  EXPECT_EQ(*got, frame);
  got = peer_recv();
  ASSERT_TRUE(got);
  EXPECT_EQ(*got, frame2);
  EXPECT_EQ(txd_.pending_used(), 2);
}

TEST_F(VirtioNetTest, TxMalformedChainsAreCompletedAndDropped) {
  ASSERT_TRUE(activate(kBaseFeatures));
  // Shorter than the header.
  tx_post(make_frame(8, 4));
  // Larger than the largest frame (65550 + header).
  tx_post(make_frame(kMaxFrameWithHeader + 1, 5), {kMaxFrameWithHeader / 2, kMaxFrameWithHeader / 2 + 1});
  // Only a device-writable buffer: no frame at all.
  txd_.add_chain({{txd_.alloc(64), 64, true}});
  // A buffer outside guest memory (a malformed chain).
  txd_.add_chain({{kMemSize - 16, 64, false}});
  // Then a good one: the queue keeps working.
  const auto good = make_frame(kVnetHdrLen + 100, 6);
  tx_post(good);
  kick(kNetTxQueue);

  auto got = peer_recv();
  ASSERT_TRUE(got);
  EXPECT_EQ(*got, good);
  EXPECT_FALSE(peer_recv(50));
  ASSERT_TRUE(wait_until([&] { return txd_.pending_used() == 5; }));
  for (int i = 0; i < 5; ++i) EXPECT_EQ(txd_.pop_used()->len, 0u);
  EXPECT_EQ(stats().tx_dropped, 4u);
  EXPECT_EQ(stats().tx_frames, 1u);
}

TEST_F(VirtioNetTest, TxBeforeActivateIsSentOnActivate) {
  const auto frame = make_frame(kVnetHdrLen + 64, 7);
  tx_post(frame);
  ASSERT_TRUE(activate(kBaseFeatures));
  auto got = peer_recv();
  ASSERT_TRUE(got);
  EXPECT_EQ(*got, frame);
}

TEST_F(VirtioNetTest, TxBackendFullWaitsThenResumes) {
  ASSERT_TRUE(activate(kBaseFeatures | kEventIdx));
  // Fill the socket until the device's writes would block, without reading.
  const size_t frame_len = kVnetHdrLen + 8000;
  std::vector<std::vector<uint8_t>> sent;
  for (uint32_t i = 0; i < 200; ++i) {
    sent.push_back(make_frame(frame_len, 100 + i));
    tx_post(sent.back());
  }
  kick(kNetTxQueue);
  ASSERT_TRUE(wait_until([&] { return stats().tx_would_block > 0; }));
  const uint64_t wakeups = stats().backend_wakeups;
  std::this_thread::sleep_for(30ms);
  // Waiting for EPOLLOUT, not spinning on it.
  EXPECT_LE(stats().backend_wakeups, wakeups + 2);
  for (uint32_t i = 0; i < 200; ++i) {
    auto got = peer_recv();
    ASSERT_TRUE(got) << "frame " << i;
    ASSERT_EQ(*got, sent[i]) << "frame " << i;
  }
  ASSERT_TRUE(wait_until([&] { return txd_.pending_used() == 200; }));
  EXPECT_EQ(stats().tx_frames, 200u);
  EXPECT_EQ(stats().tx_dropped, 0u);
}

TEST_F(VirtioNetTest, TxBudgetPerTurnThenContinues) {
  // A 512-entry transmit queue full of frames: one turn sends kTxBudget of
  // them, the rest follow on later turns of the loop (via EPOLLOUT).
  constexpr uint16_t kBig = 512;
  Queue big(kBig);
  QueueDriver drv(mem_, kBig, 0x7d0000, kTxData, kTxDataSize);
  drv.configure(big);
  bool ok = false;
  on_loop([&] { ok = dev_->activate(mem_, kBaseFeatures, {&rxq_, &big}, irq_); });
  ASSERT_TRUE(ok);
  for (uint32_t i = 0; i < 400; ++i) {
    const auto f = make_frame(kVnetHdrLen + 60, 200 + i);
    drv.add_chain({{drv.alloc_bytes(f), static_cast<uint32_t>(f.size()), false}});
  }
  uint64_t first_turn = 0;
  on_loop([&] {
    dev_->process_queue(kNetTxQueue);
    first_turn = dev_->stats().tx_frames;
  });
  EXPECT_EQ(first_turn, VirtioNet::kTxBudget);
  for (uint32_t i = 0; i < 400; ++i) {
    auto got = peer_recv();
    ASSERT_TRUE(got) << i;
    ASSERT_EQ(*got, make_frame(kVnetHdrLen + 60, 200 + i)) << i;
  }
  ASSERT_TRUE(wait_until([&] { return drv.pending_used() == 400; }));
  on_loop([&] { dev_->reset(); });
}

TEST_F(VirtioNetTest, ActivateWithoutInterruptFails) {
  bool ok = true;
  on_loop([&] { ok = dev_->activate(mem_, kBaseFeatures, {&rxq_, &txq_}, nullptr); });
  EXPECT_FALSE(ok);
  on_loop([&] { ok = dev_->activate(mem_, kBaseFeatures, {&rxq_}, irq_); });
  EXPECT_FALSE(ok);
}

// --- Receive ------------------------------------------------------------------------

TEST_F(VirtioNetTest, RxIntoSingleLargeBuffer) {
  ASSERT_TRUE(activate(kBaseFeatures));
  const uint16_t head = rx_post(kMaxFrameWithHeader);
  kick(kNetRxQueue);
  // DATA_VALID from the back-end; without GUEST_CSUM the device clears it.
  auto frame = make_frame(kVnetHdrLen + 1514, 10, /*flags=*/2);
  peer_send(frame);
  auto used = rx_wait_used();
  ASSERT_TRUE(used);
  EXPECT_EQ(used->id, head);
  ASSERT_EQ(used->len, frame.size());
  auto got = rx_bytes(*used);
  EXPECT_EQ(got[0], 0);                             // flags cleared
  EXPECT_EQ(le16(got, kVnetHdrNumBuffersOffset), 1);  // num_buffers
  EXPECT_TRUE(std::equal(frame.begin() + kVnetHdrLen, frame.end(), got.begin() + kVnetHdrLen));
  EXPECT_GE(irq_->queue_count(kNetRxQueue), 1u);
  EXPECT_EQ(stats().rx_frames, 1u);
}

TEST_F(VirtioNetTest, RxKeepsFlagsWithGuestCsumAndTakesLargestFrame) {
  ASSERT_TRUE(activate(kBaseFeatures | kGuestCsum | feature_bit(kNetFGuestTso4)));
  rx_post(kMaxFrameWithHeader);
  kick(kNetRxQueue);
  auto frame = make_frame(kMaxFrameWithHeader, 11, /*flags=*/2);
  peer_send(frame);
  auto used = rx_wait_used();
  ASSERT_TRUE(used);
  ASSERT_EQ(used->len, frame.size());
  auto got = rx_bytes(*used);
  EXPECT_EQ(got[0], 2);
  EXPECT_EQ(le16(got, kVnetHdrNumBuffersOffset), 1);
  EXPECT_TRUE(std::equal(frame.begin() + kVnetHdrLen, frame.end(), got.begin() + kVnetHdrLen));
}

TEST_F(VirtioNetTest, RxWithoutMergeableDropsFrameLargerThanChain) {
  ASSERT_TRUE(activate(kBaseFeatures));
  const uint16_t head = rx_post(200);
  kick(kNetRxQueue);
  peer_send(make_frame(500, 12));   // does not fit: dropped, buffer kept
  auto small = make_frame(150, 13);
  peer_send(small);                 // fits the same buffer
  auto used = rx_wait_used();
  ASSERT_TRUE(used);
  EXPECT_EQ(used->id, head);
  ASSERT_EQ(used->len, small.size());
  auto got = rx_bytes(*used);
  EXPECT_TRUE(std::equal(small.begin() + kVnetHdrLen, small.end(), got.begin() + kVnetHdrLen));
  EXPECT_EQ(stats().rx_dropped, 1u);
  EXPECT_EQ(stats().rx_frames, 1u);
}

TEST_F(VirtioNetTest, RxMergeableAcrossSmallBuffers) {
  ASSERT_TRUE(activate(kBaseFeatures | kMrg | kEventIdx));
  std::vector<uint16_t> heads;
  for (int i = 0; i < 8; ++i) heads.push_back(rx_post(256));
  kick(kNetRxQueue);
  auto frame = make_frame(1000, 20);
  peer_send(frame);
  std::vector<uint8_t> joined;
  std::vector<uint32_t> lens;
  for (int i = 0; i < 4; ++i) {
    auto used = rx_wait_used();
    ASSERT_TRUE(used) << "buffer " << i;
    EXPECT_EQ(used->id, heads[i]);  // in the order the driver posted them
    lens.push_back(used->len);
    auto bytes = rx_bytes(*used);
    joined.insert(joined.end(), bytes.begin(), bytes.end());
  }
  EXPECT_EQ(lens, (std::vector<uint32_t>{256, 256, 256, 232}));
  EXPECT_EQ(le16(joined, kVnetHdrNumBuffersOffset), 4);
  ASSERT_EQ(joined.size(), frame.size());
  EXPECT_TRUE(std::equal(frame.begin() + kVnetHdrLen, frame.end(), joined.begin() + kVnetHdrLen));

  // A second, small frame uses the next cached buffer alone.
  auto small = make_frame(100, 21);
  peer_send(small);
  auto used = rx_wait_used();
  ASSERT_TRUE(used);
  EXPECT_EQ(used->id, heads[4]);
  auto got = rx_bytes(*used);
  EXPECT_EQ(le16(got, kVnetHdrNumBuffersOffset), 1);
  EXPECT_EQ(used->len, small.size());
}

TEST_F(VirtioNetTest, RxMergeableFrameWaitsForMoreBuffers) {
  ASSERT_TRUE(activate(kBaseFeatures | kMrg));
  rx_post(256);
  rx_post(256);
  kick(kNetRxQueue);
  auto frame = make_frame(1000, 22);
  peer_send(frame);
  auto next = make_frame(300, 23);
  peer_send(next);
  // Not enough room: the frame waits (held once), nothing is returned yet.
  bool pending = false;
  ASSERT_TRUE(wait_until([&] {
    on_loop([&] { pending = dev_->rx_frame_pending(); });
    return pending;
  }));
  EXPECT_EQ(rxd_.pending_used(), 0);
  EXPECT_FALSE(dev_->rx_polling());

  rx_post(256);
  rx_post(512);
  kick(kNetRxQueue);
  std::vector<uint8_t> joined;
  for (int i = 0; i < 4; ++i) {
    auto used = rx_wait_used();
    ASSERT_TRUE(used) << i;
    auto b = rx_bytes(*used);
    joined.insert(joined.end(), b.begin(), b.end());
  }
  EXPECT_EQ(le16(joined, kVnetHdrNumBuffersOffset), 4);
  ASSERT_EQ(joined.size(), frame.size());
  EXPECT_TRUE(std::equal(frame.begin() + kVnetHdrLen, frame.end(), joined.begin() + kVnetHdrLen));
  // The second frame found no buffer left: it waited in the back-end.
  rx_post(2048);
  kick(kNetRxQueue);
  auto used = rx_wait_used();
  ASSERT_TRUE(used);
  EXPECT_EQ(used->len, next.size());
}

TEST_F(VirtioNetTest, RxNoBuffersStopsPollingThenDelivers) {
  ASSERT_TRUE(activate(kBaseFeatures | kMrg | kEventIdx));
  std::vector<std::vector<uint8_t>> frames;
  for (uint32_t i = 0; i < 3; ++i) {
    frames.push_back(make_frame(600 + i, 30 + i));
    peer_send(frames.back());
  }
  // The device looks once, finds no buffers and stops watching the fd.
  ASSERT_TRUE(wait_until([&] { return stats().rx_starved >= 1; }));
  EXPECT_FALSE(dev_->rx_polling());
  const uint64_t wakeups = stats().backend_wakeups;
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(stats().backend_wakeups, wakeups) << "busy loop on a readable fd";
  EXPECT_EQ(stats().rx_frames, 0u);
  // EVENT_IDX: it asked to be told about the very next buffer.
  EXPECT_EQ(rxd_.avail_event(), rxd_.avail_idx());

  for (int i = 0; i < 4; ++i) rx_post(2048);  // one to spare: polling stays on
  kick(kNetRxQueue);
  for (uint32_t i = 0; i < 3; ++i) {
    auto used = rx_wait_used();
    ASSERT_TRUE(used) << i;
    auto got = rx_bytes(*used);
    ASSERT_EQ(got.size(), frames[i].size());
    EXPECT_TRUE(std::equal(frames[i].begin() + kVnetHdrLen, frames[i].end(), got.begin() + kVnetHdrLen));
  }
  EXPECT_TRUE(dev_->rx_polling());
}

TEST_F(VirtioNetTest, RxUnusableChainsAreReturnedEmpty) {
  ASSERT_TRUE(activate(kBaseFeatures | kMrg));
  // Too small for the header, device-readable only, outside guest memory.
  rxd_.add_chain({{rxd_.alloc(8), 8, true}});
  rxd_.add_chain({{rxd_.alloc(64), 64, false}});
  rxd_.add_chain({{kMemSize - 8, 64, true}});
  const uint16_t good = rx_post(2048);
  kick(kNetRxQueue);
  peer_send(make_frame(100, 40));
  std::vector<UsedElem> used;
  ASSERT_TRUE(wait_until([&] { return rxd_.pending_used() == 4; }));
  for (int i = 0; i < 4; ++i) used.push_back(*rxd_.pop_used());
  for (int i = 0; i < 3; ++i) EXPECT_EQ(used[i].len, 0u);
  EXPECT_EQ(used[3].id, good);
  EXPECT_EQ(used[3].len, 100u);
  EXPECT_EQ(stats().rx_bad_chains, 3u);
}

TEST_F(VirtioNetTest, RxRuntIsDropped) {
  ASSERT_TRUE(activate(kBaseFeatures));
  rx_post(2048);
  kick(kNetRxQueue);
  peer_send(std::vector<uint8_t>(10, 0));  // shorter than a header
  auto frame = make_frame(80, 41);
  peer_send(frame);
  auto used = rx_wait_used();
  ASSERT_TRUE(used);
  EXPECT_EQ(used->len, frame.size());
  EXPECT_EQ(stats().rx_dropped, 1u);
}

TEST_F(VirtioNetTest, ResetUnregistersTheBackend) {
  ASSERT_TRUE(activate(kBaseFeatures));
  rx_post(2048);
  kick(kNetRxQueue);
  on_loop([&] { dev_->reset(); });
  EXPECT_FALSE(dev_->rx_polling());
  const uint64_t wakeups = stats().backend_wakeups;
  peer_send(make_frame(100, 50));
  std::this_thread::sleep_for(30ms);
  EXPECT_EQ(stats().backend_wakeups, wakeups);
  EXPECT_EQ(rxd_.pending_used(), 0);
  kick(kNetRxQueue);  // ignored while reset
  kick(kNetTxQueue);
  EXPECT_EQ(rxd_.pending_used(), 0);

  // A new driver (fresh queues) picks up where the back-end is.
  rxq_.reset();
  txq_.reset();
  QueueDriver rxd2{mem_, kQueueSize, kRxRing, kRxData, kRxDataSize};
  rxd2.configure(rxq_);
  txd_.configure(txq_);
  ASSERT_TRUE(activate(kBaseFeatures));
  const uint64_t buf = rxd2.alloc(2048);
  rxd2.add_chain({{buf, 2048, true}});
  kick(kNetRxQueue);
  ASSERT_TRUE(wait_until([&] { return rxd2.pending_used() == 1; }));
  EXPECT_EQ(rxd2.pop_used()->len, 100u);
}

TEST_F(VirtioNetTest, PeerHangupDetachesWithoutSpinning) {
  ASSERT_TRUE(activate(kBaseFeatures));
  rx_post(2048);
  kick(kNetRxQueue);
  ::close(peer_);
  peer_ = -1;
  ASSERT_TRUE(wait_until([&] { return !dev_->rx_polling(); }));
  const uint64_t wakeups = stats().backend_wakeups;
  std::this_thread::sleep_for(30ms);
  EXPECT_EQ(stats().backend_wakeups, wakeups);
  // Transmit still completes the guest's chains (dropping the frames).
  tx_post(make_frame(100, 51));
  kick(kNetTxQueue);
  ASSERT_TRUE(wait_until([&] { return txd_.pending_used() == 1; }));
  EXPECT_EQ(stats().tx_dropped, 1u);
}

// --- Stress ---------------------------------------------------------------------------

TEST_F(VirtioNetTest, Stress1000FramesEachWayBoundedMemory) {
  ASSERT_TRUE(activate(kBaseFeatures | kMrg | kEventIdx | kGuestCsum));
  constexpr uint32_t kFrames = 1000;
  auto size_of = [](uint32_t i) { return kVnetHdrLen + 60 + (i * 977) % 9000; };

  // The network sends 1000 frames as fast as the socket takes them; the
  // guest takes them slowly through 32 receive buffers of 2 KiB.
  std::atomic<bool> stop{false};
  std::thread sender([&] {
    for (uint32_t i = 0; i < kFrames; ++i) {
      auto f = make_frame(size_of(i), i);
      while (::send(peer_, f.data(), f.size(), MSG_DONTWAIT) < 0) {
        if (errno != EAGAIN || stop) return;
        std::this_thread::sleep_for(100us);
      }
    }
  });
  constexpr uint32_t kBufLen = 2048;
  std::vector<uint64_t> bufs;
  std::map<uint16_t, uint64_t> where;
  for (int i = 0; i < 32; ++i) bufs.push_back(rxd_.alloc(kBufLen));
  std::vector<uint64_t> free_bufs = bufs;
  auto post_free = [&] {
    while (!free_bufs.empty()) {
      const uint64_t gpa = free_bufs.back();
      free_bufs.pop_back();
      where[rxd_.add_chain({{gpa, kBufLen, true}})] = gpa;
    }
    kick(kNetRxQueue);
  };
  post_free();

  size_t max_cached = 0;
  bool ok = true;
  std::vector<uint8_t> frame;
  uint16_t expect_bufs = 0;
  for (uint32_t got = 0; got < kFrames && ok;) {
    auto used = rx_wait_used();
    if (!used) {
      ADD_FAILURE() << "frame " << got << " not delivered";
      break;
    }
    const uint64_t gpa = where.at(static_cast<uint16_t>(used->id));
    auto bytes = rxd_.read_bytes(gpa, used->len);
    if (frame.empty()) expect_bufs = le16(bytes, kVnetHdrNumBuffersOffset);
    frame.insert(frame.end(), bytes.begin(), bytes.end());
    free_bufs.push_back(gpa);
    if (--expect_bufs == 0) {
      const auto want = make_frame(size_of(got), got);
      ok = frame.size() == want.size() &&
           std::equal(want.begin() + kVnetHdrLen, want.end(), frame.begin() + kVnetHdrLen);
      EXPECT_TRUE(ok) << "frame " << got << " differs";
      frame.clear();
      ++got;
    }
    if (free_bufs.size() >= 8) {
      post_free();
      on_loop([&] { max_cached = std::max(max_cached, dev_->rx_cached_chains()); });
    }
  }
  stop = true;
  sender.join();
  ASSERT_EQ(stats().rx_frames, kFrames);
  EXPECT_LE(max_cached, 32u);  // never more than the guest posted
  on_loop([&] { EXPECT_FALSE(dev_->rx_frame_pending()); });

  // Transmit: 1000 frames through a 256-entry queue while the network reads.
  std::atomic<uint32_t> received{0};
  std::atomic<bool> tx_ok{true};
  std::thread reader([&] {
    for (uint32_t i = 0; i < kFrames; ++i) {
      auto f = peer_recv(5000);
      if (!f || *f != make_frame(size_of(i), i + kFrames)) {
        tx_ok = false;
        return;
      }
      ++received;
    }
  });
  bool stalled = false;
  for (uint32_t i = 0; i < kFrames && !stalled;) {
    // Keep 200 frames in flight at most (the data area is a bump allocator).
    if (i > 0 && i % 200 == 0) {
      kick(kNetTxQueue);
      stalled = !wait_until([&] {
        while (txd_.pop_used()) {
        }
        return stats().tx_frames >= i;
      });
      EXPECT_FALSE(stalled) << "transmit stalled at " << i;
      while (txd_.pop_used()) {
      }
      txd_.reset_alloc();
    }
    tx_post(make_frame(size_of(i), i + kFrames));
    ++i;
    if (i % 16 == 0) kick(kNetTxQueue);
  }
  kick(kNetTxQueue);
  reader.join();
  EXPECT_TRUE(tx_ok);
  EXPECT_EQ(received.load(), kFrames);
  EXPECT_EQ(stats().tx_frames, kFrames);
  EXPECT_EQ(stats().tx_dropped, 0u);
}

// --- The real TAP back-end (root and /dev/net/tun only) -----------------------------

std::string tap_skip_reason() {
  if (::geteuid() != 0) return "needs root to create a TAP interface";
  if (::access("/dev/net/tun", R_OK | W_OK) != 0) return "/dev/net/tun is not available";
  return {};
}

std::string test_ifname() { return "rzt" + std::to_string(::getpid() % 1000000); }

bool interface_exists(const std::string& name) { return ::if_nametoindex(name.c_str()) != 0; }

TEST(Tap, RejectsBadNames) {
  try {
    Tap::open("this-name-is-far-too-long");
    FAIL() << "expected UsageError";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("this-name-is-far-too-long"), std::string::npos) << e.what();
  }
  EXPECT_THROW(Tap::open(""), UsageError);
  EXPECT_THROW(Tap::open("a/b"), UsageError);
  EXPECT_THROW(Tap::open("a b"), UsageError);
}

TEST(Tap, OpensWithVnetHeaderAndNonBlocking) {
  if (auto why = tap_skip_reason(); !why.empty()) GTEST_SKIP() << why;
  const std::string name = test_ifname();
  {
    auto tap = Tap::open(name);
    EXPECT_EQ(tap->ifname(), name);
    EXPECT_EQ(tap->describe(), "tap " + name);
    EXPECT_TRUE(interface_exists(name));

    ifreq ifr{};
    ASSERT_EQ(::ioctl(tap->fd(), TUNGETIFF, &ifr), 0) << strerror(errno);
    EXPECT_EQ(std::string(ifr.ifr_name), name);
    EXPECT_TRUE(ifr.ifr_flags & IFF_TAP);
    EXPECT_TRUE(ifr.ifr_flags & IFF_NO_PI);
    EXPECT_TRUE(ifr.ifr_flags & IFF_VNET_HDR);
    EXPECT_FALSE(ifr.ifr_flags & IFF_MULTI_QUEUE);
    int hdr = 0;
    ASSERT_EQ(::ioctl(tap->fd(), TUNGETVNETHDRSZ, &hdr), 0);
    EXPECT_EQ(hdr, 12);
    EXPECT_TRUE(::fcntl(tap->fd(), F_GETFL) & O_NONBLOCK);
    EXPECT_TRUE(::fcntl(tap->fd(), F_GETFD) & FD_CLOEXEC);

    uint8_t buf[2048];
    iovec iov{buf, sizeof buf};
    EXPECT_EQ(tap->read_frame(std::span<const iovec>(&iov, 1)), -EAGAIN);

    EXPECT_EQ(tap->offload_flags(), 0u);
    tap->set_offloads(offloads_from_features(feature_bit(kNetFGuestCsum) | feature_bit(kNetFGuestTso4) |
                                             feature_bit(kNetFGuestTso6) | feature_bit(kNetFGuestEcn)));
    EXPECT_EQ(tap->offload_flags(), unsigned{TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN});
    tap->set_offloads({});
    EXPECT_EQ(tap->offload_flags(), 0u);

    // A second opener of a single-queue TAP is refused, naming it.
    try {
      Tap::open(name);
      ADD_FAILURE() << "second open succeeded";
    } catch (const UsageError& e) {
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
  }
  // Not persistent: closing the fd removes the interface.
  EXPECT_FALSE(interface_exists(name));
}

TEST(Tap, ExistingNonTapInterfaceIsRefused) {
  if (auto why = tap_skip_reason(); !why.empty()) GTEST_SKIP() << why;
  try {
    Tap::open("lo");
    FAIL() << "attached to lo";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("tap=lo"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("not a single-queue TAP"), std::string::npos) << e.what();
  }
}

TEST(Tap, PermissionErrorNamesTheInterface) {
  if (auto why = tap_skip_reason(); !why.empty()) GTEST_SKIP() << why;
  // In a child without CAP_NET_ADMIN, creating an interface is refused.
  int pipefd[2];
  ASSERT_EQ(::pipe(pipefd), 0);
  const std::string name = test_ifname() + "p";
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(pipefd[0]);
    __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2]{};
    std::string msg;
    if (::syscall(SYS_capget, &hdr, data) == 0) {
      data[0].effective &= ~(1u << CAP_NET_ADMIN);
      if (::syscall(SYS_capset, &hdr, data) != 0) msg = "capset failed";
    }
    if (msg.empty()) {
      try {
        Tap::open(name);
        msg = "opened";
      } catch (const UsageError& e) {
        msg = e.what();
      } catch (const std::exception& e) {
        msg = std::string("other exception: ") + e.what();
      }
    }
    ssize_t r = ::write(pipefd[1], msg.data(), msg.size());
    (void)r;
    ::_exit(0);
  }
  ::close(pipefd[1]);
  std::string msg;
  char buf[512];
  ssize_t r;
  while ((r = ::read(pipefd[0], buf, sizeof buf)) > 0) msg.append(buf, static_cast<size_t>(r));
  ::close(pipefd[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_NE(msg.find(name), std::string::npos) << msg;
  EXPECT_NE(msg.find("permission denied"), std::string::npos) << msg;
}

// The whole path over a real TAP: frames the guest transmits arrive on the
// interface (seen by a packet socket), frames sent out of the interface
// reach the guest's receive buffers.
TEST(Tap, VirtioNetOverRealTap) {
  if (auto why = tap_skip_reason(); !why.empty()) GTEST_SKIP() << why;
  const std::string name = test_ifname() + "n";
  std::unique_ptr<Tap> tap = Tap::open(name);
  // Quiet the interface (no IPv6 autoconfiguration chatter), then bring it up.
  if (FILE* f = std::fopen(("/proc/sys/net/ipv6/conf/" + name + "/disable_ipv6").c_str(), "w")) {
    std::fputs("1", f);
    std::fclose(f);
  }
  const int ctl = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(ctl, 0);
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  ASSERT_EQ(::ioctl(ctl, SIOCGIFFLAGS, &ifr), 0);
  ifr.ifr_flags |= IFF_UP;
  ASSERT_EQ(::ioctl(ctl, SIOCSIFFLAGS, &ifr), 0) << strerror(errno);
  ::close(ctl);
  const int ifindex = static_cast<int>(::if_nametoindex(name.c_str()));
  ASSERT_GT(ifindex, 0);

  constexpr uint16_t kEtherType = 0x88b5;
  const int pkt = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(kEtherType));
  ASSERT_GE(pkt, 0) << strerror(errno);
  sockaddr_ll sll{};
  sll.sll_family = AF_PACKET;
  sll.sll_protocol = htons(kEtherType);
  sll.sll_ifindex = ifindex;
  ASSERT_EQ(::bind(pkt, reinterpret_cast<sockaddr*>(&sll), sizeof sll), 0) << strerror(errno);

  EventLoop loop;
  loop.start();
  NetConfig cfg;
  cfg.mac = {0x06, 0x00, 0xac, 0x10, 0x00, 0x02};
  VirtioNet dev(loop, std::move(tap), cfg);
  auto mem = GuestMemory::create({{0, kMemSize}});
  Queue rxq(kQueueSize), txq(kQueueSize);
  QueueDriver rxd(mem, kQueueSize, kRxRing, kRxData, kRxDataSize);
  QueueDriver txd(mem, kQueueSize, kTxRing, kTxData, kTxDataSize);
  rxd.configure(rxq);
  txd.configure(txq);
  auto irq = std::make_shared<FakeInterrupt>();
  auto run = [&](std::function<void()> fn) {
    std::packaged_task<void()> task(std::move(fn));
    auto done = task.get_future();
    loop.post([&task] { task(); });
    ASSERT_EQ(done.wait_for(10s), std::future_status::ready);
  };
  bool ok = false;
  run([&] {
    ok = dev.activate(mem, kBaseFeatures | kMrg | kEventIdx | kGuestCsum, {&rxq, &txq}, irq);
  });
  ASSERT_TRUE(ok);

  // Guest -> interface.
  std::vector<uint8_t> out = make_frame(kVnetHdrLen + 200, 77);
  const uint8_t dst[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  std::memcpy(&out[kVnetHdrLen], dst, 6);
  std::memcpy(&out[kVnetHdrLen + 6], cfg.mac.data(), 6);
  const uint64_t gpa = txd.alloc_bytes(out);
  txd.add_chain({{gpa, static_cast<uint32_t>(out.size()), false}});
  run([&] { dev.process_queue(kNetTxQueue); });
  pollfd p{pkt, POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 2000), 1) << "frame did not reach the interface";
  std::vector<uint8_t> seen(4096);
  const ssize_t n = ::recv(pkt, seen.data(), seen.size(), 0);
  ASSERT_EQ(n, static_cast<ssize_t>(out.size() - kVnetHdrLen));
  EXPECT_TRUE(std::equal(out.begin() + kVnetHdrLen, out.end(), seen.begin()));

  // Interface -> guest.
  const uint64_t rbuf = rxd.alloc(4096);
  rxd.add_chain({{rbuf, 4096, true}});
  run([&] { dev.process_queue(kNetRxQueue); });
  std::vector<uint8_t> in(300);
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<uint8_t>(i * 7);
  std::memcpy(&in[0], cfg.mac.data(), 6);
  in[12] = kEtherType >> 8;
  in[13] = kEtherType & 0xff;
  ASSERT_EQ(::send(pkt, in.data(), in.size(), 0), static_cast<ssize_t>(in.size())) << strerror(errno);
  // Other traffic may come first; find ours.
  bool found = false;
  for (int tries = 0; tries < 8 && !found; ++tries) {
    if (!wait_until([&] { return rxd.pending_used() > 0; }, 2s)) break;
    auto used = rxd.pop_used();
    auto got = rxd.read_bytes(rbuf, used->len);
    if (used->len == in.size() + kVnetHdrLen &&
        std::equal(in.begin(), in.end(), got.begin() + kVnetHdrLen)) {
      EXPECT_EQ(got[kVnetHdrNumBuffersOffset], 1);
      found = true;
    } else {
      rxd.add_chain({{rbuf, 4096, true}});
      run([&] { dev.process_queue(kNetRxQueue); });
    }
  }
  EXPECT_TRUE(found) << "frame sent out of the interface did not reach the guest";
  run([&] { dev.reset(); });
  ::close(pkt);
}

}  // namespace
}  // namespace rz::virtio
