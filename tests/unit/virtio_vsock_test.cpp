// Unit tests for virtio-vsock (src/virtio/vsock.h). The device runs on a
// real EventLoop against a mock guest (three split virtqueues in a small
// GuestMemory, driven through test::QueueDriver); the test plays both the
// guest's vsock driver (packets on the tx queue, rx buffers) and host
// processes on the Unix sockets. No /dev/kvm needed.
#include <gtest/gtest.h>

#include <dirent.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
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
#include "util/fd.h"
#include "virtio/virtio_defs.h"
#include "virtio/vsock.h"
#include "virtio/vsock_packet.h"
#include "virtio_test_driver.h"

namespace rz::virtio {
namespace {

using memory::GuestMemory;
using test::FakeInterrupt;
using test::QueueDriver;
using test::Seg;
using test::UsedElem;
using vsock::Header;
using vsock::kHdrSize;
using namespace std::chrono_literals;

constexpr uint64_t kMemSize = 8 << 20;
constexpr uint16_t kQSize = 64;
constexpr uint64_t kRxRing = 0x1000;
constexpr uint64_t kTxRing = 0x3000;
constexpr uint64_t kEvRing = 0x5000;
constexpr uint64_t kRxSlots = 0x100000;  // kQSize slots of kSlotSize
constexpr uint64_t kSlotSize = 0x1100;   // 44-byte header + 4096-byte buffer, padded
constexpr uint64_t kTxData = 0x200000;
constexpr uint64_t kTxDataSize = 0x400000;
constexpr uint64_t kEvData = 0x700000;
constexpr uint32_t kRxBufLen = 4096;  // what Linux gives per rx buffer
constexpr uint64_t kCid = 3;
constexpr uint32_t kGuestBuf = 256 * 1024;

bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds limit = 5s) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

size_t count_fds() {
  size_t n = 0;
  DIR* d = ::opendir("/proc/self/fd");
  if (!d) return 0;
  while (dirent* e = ::readdir(d))
    if (e->d_name[0] != '.') ++n;
  ::closedir(d);
  return n - 1;  // the DIR's own fd
}

std::vector<uint8_t> pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>((i * 131 + seed * 17 + (i >> 9)) & 0xff);
  return v;
}

sockaddr_un unix_addr(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
  return a;
}

UniqueFd unix_listen(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un a = unix_addr(path);
  ::unlink(path.c_str());
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) return UniqueFd();
  if (::listen(fd.get(), 16) < 0) return UniqueFd();
  return fd;
}

UniqueFd unix_connect(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un a = unix_addr(path);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) return UniqueFd();
  return fd;
}

UniqueFd accept_with_timeout(int listener, int timeout_ms = 3000) {
  pollfd p{listener, POLLIN, 0};
  if (::poll(&p, 1, timeout_ms) != 1) return UniqueFd();
  return UniqueFd(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
}

void write_all(int fd, const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    const ssize_t r = ::send(fd, p, n, MSG_NOSIGNAL);
    ASSERT_GT(r, 0) << strerror(errno);
    p += r;
    n -= static_cast<size_t>(r);
  }
}
void write_str(int fd, const std::string& s) { write_all(fd, s.data(), s.size()); }

// Reads exactly n bytes (or fewer if EOF / timeout comes first).
std::vector<uint8_t> read_n(int fd, size_t n, int timeout_ms = 3000) {
  std::vector<uint8_t> out;
  out.reserve(n);
  std::vector<uint8_t> buf(65536);
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (out.size() < n) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) != 1) break;
    const ssize_t r = ::recv(fd, buf.data(), std::min(buf.size(), n - out.size()), MSG_DONTWAIT);
    if (r <= 0) break;
    out.insert(out.end(), buf.begin(), buf.begin() + r);
  }
  return out;
}

std::string read_line(int fd, int timeout_ms = 3000) {
  std::string s;
  while (s.size() < 128) {
    auto b = read_n(fd, 1, timeout_ms);
    if (b.empty()) break;
    s.push_back(static_cast<char>(b[0]));
    if (b[0] == '\n') break;
  }
  return s;
}

// True once the peer closed: reads (and discards) what is still buffered.
bool wait_eof(int fd, int timeout_ms = 3000) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  char buf[4096];
  while (std::chrono::steady_clock::now() < end) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 50) != 1) continue;
    const ssize_t r = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (r == 0) return true;
    if (r < 0 && errno != EAGAIN) return true;  // reset counts as closed
  }
  return false;
}

// Nothing to read, and not closed either.
bool quiet(int fd, int ms = 100) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, ms) == 0;
}

struct Packet {
  Header h;
  std::vector<uint8_t> payload;
  uint32_t used_len = 0;
};

class VirtioVsockTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/rz-vsock-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    uds_ = dir_ + "/v.sock";
    loop_.start();
  }
  void TearDown() override {
    if (dev_) on_loop([&] { dev_->reset(); });
    dev_.reset();
    loop_.stop();
    std::string cmd = "rm -rf '" + dir_ + "'";
    ASSERT_EQ(std::system(cmd.c_str()), 0);
  }

  VsockConfig config() {
    VsockConfig c;
    c.guest_cid = kCid;
    c.uds_path = uds_;
    return c;
  }
  void create(const VsockConfig& c) { dev_ = std::make_unique<VirtioVsock>(loop_, c); }
  void start(const std::function<void(VsockConfig&)>& tweak = {}) {
    VsockConfig c = config();
    if (tweak) tweak(c);
    create(c);
    rxd_.configure(rxq_);
    txd_.configure(txq_);
    evd_.configure(evq_);
    const uint64_t f = dev_->device_features();
    rxq_.set_features(f);
    txq_.set_features(f);
    evq_.set_features(f);
    bool ok = false;
    on_loop([&] { ok = dev_->activate(mem_, f, {&rxq_, &txq_, &evq_}, irq_); });
    ASSERT_TRUE(ok);
    // Two descriptors per rx chain: half the ring's worth of chains.
    for (uint16_t i = 0; i < kQSize / 2; ++i) free_slots_.push_back(i);
  }

  void on_loop(std::function<void()> fn) {
    std::packaged_task<void()> task(std::move(fn));
    auto done = task.get_future();
    loop_.post([&task] { task(); });
    ASSERT_EQ(done.wait_for(10s), std::future_status::ready) << "event loop stuck";
    done.get();
  }
  void kick(uint16_t q) {
    on_loop([&] { dev_->process_queue(q); });
  }

  // --- rx: buffers for the device, as Linux posts them (header + 4 KiB) ----
  void give_rx(size_t n = SIZE_MAX) {
    size_t added = 0;
    while (added < n && !free_slots_.empty()) {
      const uint16_t slot = free_slots_.back();
      free_slots_.pop_back();
      const uint64_t base = kRxSlots + kSlotSize * slot;
      const uint16_t head = rxd_.add_chain({{base, kHdrSize, true}, {base + 64, kRxBufLen, true}});
      rx_slot_[head] = slot;
      ++added;
    }
    kick(vsock::kRxQueue);
  }
  std::optional<Packet> next_rx(std::chrono::milliseconds limit = 3s) {
    if (!wait_until([&] { return rxd_.pending_used() > 0; }, limit)) return std::nullopt;
    const auto used = rxd_.pop_used();
    if (!used) return std::nullopt;
    const uint16_t slot = rx_slot_.at(static_cast<uint16_t>(used->id));
    rx_slot_.erase(static_cast<uint16_t>(used->id));
    const uint64_t base = kRxSlots + kSlotSize * slot;
    Packet p;
    p.used_len = used->len;
    auto raw = rxd_.read_bytes(base, kHdrSize);
    p.h = vsock::decode(std::span<const uint8_t, kHdrSize>(raw.data(), kHdrSize));
    if (used->len > kHdrSize) p.payload = rxd_.read_bytes(base + 64, used->len - kHdrSize);
    free_slots_.push_back(slot);
    if (auto_refill_) give_rx(1);
    return p;
  }
  // The next packet that is not a credit message.
  std::optional<Packet> next_non_credit(std::chrono::milliseconds limit = 3s) {
    for (int i = 0; i < 1000; ++i) {
      auto p = next_rx(limit);
      if (!p) return p;
      if (p->h.op != vsock::kOpCreditUpdate && p->h.op != vsock::kOpCreditRequest) return p;
    }
    return std::nullopt;
  }
  bool no_rx(std::chrono::milliseconds wait = 200ms) {
    std::this_thread::sleep_for(wait);
    return rxd_.pending_used() == 0;
  }

  // --- tx: packets from the guest ---------------------------------------------
  static Header guest_hdr(uint32_t src_port, uint32_t dst_port, uint16_t op, uint32_t len = 0,
                          uint32_t buf_alloc = kGuestBuf, uint32_t fwd_cnt = 0) {
    Header h;
    h.src_cid = kCid;
    h.dst_cid = vsock::kCidHost;
    h.src_port = src_port;
    h.dst_port = dst_port;
    h.len = len;
    h.type = vsock::kTypeStream;
    h.op = op;
    h.buf_alloc = buf_alloc;
    h.fwd_cnt = fwd_cnt;
    return h;
  }
  static std::vector<uint8_t> bytes(const Header& h) {
    std::vector<uint8_t> v(kHdrSize);
    vsock::encode(h, std::span<uint8_t, kHdrSize>(v.data(), kHdrSize));
    return v;
  }
  // Posts one chain and runs the tx queue; waits for the device to return it.
  void send_segs(const std::vector<Seg>& segs) {
    const uint16_t head = txd_.add_chain(segs);
    kick(vsock::kTxQueue);
    auto used = txd_.pop_used();
    ASSERT_TRUE(used.has_value()) << "tx chain not completed";
    EXPECT_EQ(used->id, head);
    txd_.reset_alloc();
  }
  // Header and payload in separate descriptors (as Linux sends them);
  // `one_buffer` puts both into one.
  void send(const Header& h, const std::vector<uint8_t>& payload = {}, bool one_buffer = false) {
    std::vector<uint8_t> hb = bytes(h);
    if (one_buffer) {
      hb.insert(hb.end(), payload.begin(), payload.end());
      send_segs({{txd_.alloc_bytes(hb), static_cast<uint32_t>(hb.size()), false}});
    } else if (payload.empty()) {
      send_segs({{txd_.alloc_bytes(hb), kHdrSize, false}});
    } else {
      send_segs({{txd_.alloc_bytes(hb), kHdrSize, false},
                 {txd_.alloc_bytes(payload), static_cast<uint32_t>(payload.size()), false}});
    }
  }

  // --- whole connections ---------------------------------------------------------
  struct Conn {
    UniqueFd fd;              // the host process's end
    uint32_t host_port = 0;
    uint32_t guest_port = 0;
  };
  // Host-initiated: CONNECT, REQUEST seen by the guest, RESPONSE, "OK".
  Conn host_connect(uint32_t guest_port, uint32_t guest_buf = kGuestBuf) {
    Conn c;
    c.guest_port = guest_port;
    c.fd = unix_connect(uds_);
    EXPECT_TRUE(c.fd.valid()) << strerror(errno);
    if (!c.fd.valid()) return c;
    write_str(c.fd.get(), "CONNECT " + std::to_string(guest_port) + "\n");
    auto req = next_non_credit();
    EXPECT_TRUE(req.has_value()) << "no REQUEST";
    if (!req) return c;
    EXPECT_EQ(req->h.op, vsock::kOpRequest);
    EXPECT_EQ(req->h.src_cid, vsock::kCidHost);
    EXPECT_EQ(req->h.dst_cid, kCid);
    EXPECT_EQ(req->h.dst_port, guest_port);
    EXPECT_EQ(req->h.type, vsock::kTypeStream);
    EXPECT_EQ(req->h.len, 0u);
    EXPECT_EQ(req->used_len, kHdrSize);
    EXPECT_GE(req->h.src_port, VirtioVsock::kFirstHostPort);
    EXPECT_EQ(req->h.buf_alloc, dev_->config().buf_alloc);
    c.host_port = req->h.src_port;
    send(guest_hdr(guest_port, c.host_port, vsock::kOpResponse, 0, guest_buf));
    EXPECT_EQ(read_line(c.fd.get()), "OK " + std::to_string(c.host_port) + "\n");
    return c;
  }
  // Guest-initiated to host port `port` (a listener must exist).
  Conn guest_connect(int listener, uint32_t port, uint32_t guest_port,
                     uint32_t guest_buf = kGuestBuf) {
    Conn c;
    c.host_port = port;
    c.guest_port = guest_port;
    send(guest_hdr(guest_port, port, vsock::kOpRequest, 0, guest_buf));
    auto resp = next_non_credit();
    EXPECT_TRUE(resp.has_value()) << "no RESPONSE";
    if (!resp) return c;
    EXPECT_EQ(resp->h.op, vsock::kOpResponse);
    EXPECT_EQ(resp->h.src_port, port);
    EXPECT_EQ(resp->h.dst_port, guest_port);
    EXPECT_EQ(resp->h.src_cid, vsock::kCidHost);
    EXPECT_EQ(resp->h.dst_cid, kCid);
    c.fd = accept_with_timeout(listener);
    EXPECT_TRUE(c.fd.valid());
    return c;
  }
  // Collects `total` RW payload bytes for `c` (credit packets skipped).
  std::vector<uint8_t> guest_read(const Conn& c, size_t total, uint32_t max_packet = kRxBufLen) {
    std::vector<uint8_t> got;
    while (got.size() < total) {
      auto p = next_non_credit();
      EXPECT_TRUE(p.has_value()) << "stalled after " << got.size() << " bytes";
      if (!p) break;
      EXPECT_EQ(p->h.op, vsock::kOpRw);
      if (p->h.op != vsock::kOpRw) break;
      EXPECT_EQ(p->h.src_port, c.host_port);
      EXPECT_EQ(p->h.dst_port, c.guest_port);
      EXPECT_GT(p->h.len, 0u);
      EXPECT_LE(p->h.len, max_packet);
      EXPECT_EQ(p->used_len, kHdrSize + p->h.len);
      got.insert(got.end(), p->payload.begin(), p->payload.end());
    }
    return got;
  }

  std::string dir_, uds_;
  GuestMemory mem_ = GuestMemory::create({{0, kMemSize}});
  QueueDriver rxd_{mem_, kQSize, kRxRing, kRxSlots, kSlotSize * kQSize};
  QueueDriver txd_{mem_, kQSize, kTxRing, kTxData, kTxDataSize};
  QueueDriver evd_{mem_, 8, kEvRing, kEvData, 0x1000};
  Queue rxq_{256}, txq_{256}, evq_{256};
  std::shared_ptr<FakeInterrupt> irq_ = std::make_shared<FakeInterrupt>();
  std::map<uint16_t, uint16_t> rx_slot_;  // rx head -> slot
  std::vector<uint16_t> free_slots_;
  bool auto_refill_ = true;
  EventLoop loop_;
  std::unique_ptr<VirtioVsock> dev_;
};

// --- Configuration and identity ---------------------------------------------------

TEST(VsockPacket, HeaderRoundTripIsLittleEndianPacked) {
  Header h;
  h.src_cid = 0x0102030405060708ULL;
  h.dst_cid = 2;
  h.src_port = 0x11223344;
  h.dst_port = 0x55667788;
  h.len = 0x99aabbcc;
  h.type = 1;
  h.op = 5;
  h.flags = 3;
  h.buf_alloc = 0x40000;
  h.fwd_cnt = 0xdeadbeef;
  uint8_t raw[kHdrSize];
  vsock::encode(h, raw);
  EXPECT_EQ(raw[0], 0x08);
  EXPECT_EQ(raw[7], 0x01);
  EXPECT_EQ(raw[8], 2);
  EXPECT_EQ(raw[16], 0x44);
  EXPECT_EQ(raw[20], 0x88);
  EXPECT_EQ(raw[24], 0xcc);
  EXPECT_EQ(raw[28], 1);
  EXPECT_EQ(raw[30], 5);
  EXPECT_EQ(raw[32], 3);
  EXPECT_EQ(raw[38], 0x04);
  EXPECT_EQ(raw[40], 0xef);
  EXPECT_EQ(raw[43], 0xde);
  EXPECT_EQ(vsock::decode(raw), h);
}

TEST(VsockSpec, Parses) {
  VsockConfig c = parse_vsock_spec("cid=3,socket=/run/vm1.vsock");
  EXPECT_EQ(c.guest_cid, 3u);
  EXPECT_EQ(c.uds_path, "/run/vm1.vsock");
  c = parse_vsock_spec("uds_path=/tmp/x,cid=4294967294");
  EXPECT_EQ(c.guest_cid, 4294967294u);
  EXPECT_EQ(c.uds_path, "/tmp/x");
  for (const char* bad : {"", "cid=3", "socket=/x", "cid=2,socket=/x", "cid=4294967295,socket=/x",
                          "cid=x,socket=/x", "cid=3,socket=", "cid=3,socket=/x,cid=4",
                          "cid=3,socket=/x,foo=1", "cid=3,,socket=/x", "cid3,socket=/x"}) {
    EXPECT_THROW(parse_vsock_spec(bad), UsageError) << bad;
  }
}

TEST_F(VirtioVsockTest, IdentityFeaturesAndConfig) {
  create(config());
  EXPECT_EQ(dev_->device_type(), 19);
  EXPECT_EQ(dev_->num_queues(), 3);
  const uint64_t f = dev_->device_features();
  EXPECT_TRUE(f & feature_bit(kVirtioFVersion1));
  EXPECT_TRUE(f & feature_bit(kVirtioFEventIdx));
  EXPECT_FALSE(f & feature_bit(vsock::kFSeqpacket));
  uint8_t cfg[12];
  std::memset(cfg, 0xff, sizeof cfg);
  dev_->read_config(0, cfg);
  EXPECT_EQ(cfg[0], 3);
  for (int i = 1; i < 12; ++i) EXPECT_EQ(cfg[i], 0) << i;
  VsockConfig c2 = config();
  c2.guest_cid = 0x1234567890ULL;
  c2.uds_path = dir_ + "/w.sock";
  EXPECT_THROW(VirtioVsock(loop_, c2), UsageError);  // above 32 bits
  c2.guest_cid = 0x12345678;
  VirtioVsock d2(loop_, c2);
  uint32_t lo = 0, hi = 0xffffffff;
  d2.read_config(0, {reinterpret_cast<uint8_t*>(&lo), 4});
  d2.read_config(4, {reinterpret_cast<uint8_t*>(&hi), 4});
  EXPECT_EQ(lo, 0x12345678u);
  EXPECT_EQ(hi, 0u);
  uint8_t far[4] = {1, 1, 1, 1};
  d2.read_config(UINT64_MAX - 1, far);
  EXPECT_EQ(far[0] | far[1] | far[2] | far[3], 0);
}

TEST_F(VirtioVsockTest, BindErrorsAreUsageErrors) {
  VsockConfig c = config();
  c.guest_cid = 2;
  EXPECT_THROW(create(c), UsageError);
  c = config();
  c.uds_path = dir_ + "/" + std::string(120, 'a');
  EXPECT_THROW(create(c), UsageError);
  c.uds_path = dir_ + "/no/such/dir/v.sock";
  EXPECT_THROW(create(c), UsageError);
  // A regular file is not ours to remove.
  c.uds_path = dir_ + "/file";
  { std::ofstream(c.uds_path) << "keep me"; }
  EXPECT_THROW(create(c), UsageError);
  struct stat st;
  ASSERT_EQ(::stat(c.uds_path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  // A socket a live process listens on is in use.
  c.uds_path = dir_ + "/live.sock";
  UniqueFd live = unix_listen(c.uds_path);
  ASSERT_TRUE(live.valid());
  EXPECT_THROW(create(c), UsageError);
}

TEST_F(VirtioVsockTest, StaleSocketIsReplacedAndRemovedOnDestruction) {
  {
    UniqueFd stale = unix_listen(uds_);
    ASSERT_TRUE(stale.valid());
  }  // closed, the file stays
  struct stat st;
  ASSERT_EQ(::stat(uds_.c_str(), &st), 0);
  create(config());
  UniqueFd c = unix_connect(uds_);
  EXPECT_TRUE(c.valid()) << "device is not listening";
  c.reset();
  dev_.reset();
  EXPECT_NE(::stat(uds_.c_str(), &st), 0) << "socket file left behind";
}

// --- Host-initiated connections -------------------------------------------------------

TEST_F(VirtioVsockTest, HostConnectHandshake) {
  start();
  give_rx();
  Conn c = host_connect(52);
  ASSERT_TRUE(c.fd.valid());
  EXPECT_EQ(dev_->connection_count(), 1u);
  EXPECT_EQ(dev_->stats().host_connects, 1u);
  EXPECT_GT(irq_->queue_count(vsock::kRxQueue), 0u);
  // A second connection gets another host port.
  Conn c2 = host_connect(52);
  EXPECT_NE(c2.host_port, c.host_port);
  EXPECT_EQ(dev_->connection_count(), 2u);
}

TEST_F(VirtioVsockTest, HostConnectRefusedByGuestClosesSocket) {
  start();
  give_rx();
  UniqueFd fd = unix_connect(uds_);
  write_str(fd.get(), "CONNECT 99\n");
  auto req = next_rx();
  ASSERT_TRUE(req);
  ASSERT_EQ(req->h.op, vsock::kOpRequest);
  send(guest_hdr(99, req->h.src_port, vsock::kOpRst));
  EXPECT_TRUE(wait_eof(fd.get()));
  EXPECT_TRUE(wait_until([&] { return dev_->connection_count() == 0; }));
  EXPECT_TRUE(no_rx()) << "an RST must not be answered";
}

TEST_F(VirtioVsockTest, HostGivingUpBeforeResponseResetsGuest) {
  start();
  give_rx();
  UniqueFd fd = unix_connect(uds_);
  write_str(fd.get(), "CONNECT 60\n");
  auto req = next_rx();
  ASSERT_TRUE(req);
  ASSERT_EQ(req->h.op, vsock::kOpRequest);
  fd.reset();
  EXPECT_TRUE(wait_until([&] { return dev_->connection_count() == 0; }));
  auto p = next_rx();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->h.op, vsock::kOpRst);
  EXPECT_EQ(p->h.src_port, req->h.src_port);
  EXPECT_EQ(p->h.dst_port, 60u);
}

TEST_F(VirtioVsockTest, MalformedConnectLinesClose) {
  start();
  give_rx();
  for (const std::string& line :
       {std::string("CONNEKT 5\n"), std::string("CONNECT \n"), std::string("CONNECT 4294967296\n"),
        std::string("CONNECT -1\n"), std::string("CONNECT 5 \n"), std::string(70, 'C')}) {
    UniqueFd fd = unix_connect(uds_);
    ASSERT_TRUE(fd.valid());
    write_str(fd.get(), line);
    EXPECT_TRUE(wait_eof(fd.get())) << line;
  }
  EXPECT_EQ(dev_->stats().bad_connect_lines, 6u);
  EXPECT_TRUE(no_rx());
  EXPECT_TRUE(wait_until([&] { return dev_->connection_count() == 0; }));
  // EOF before a whole line.
  {
    UniqueFd fd = unix_connect(uds_);
    write_str(fd.get(), "CONN");
  }
  EXPECT_TRUE(wait_until([&] { return dev_->connection_count() == 0; }));
}

TEST_F(VirtioVsockTest, ConnectLineInPiecesAndPipelinedData) {
  start();
  give_rx();
  UniqueFd fd = unix_connect(uds_);
  write_str(fd.get(), "CONN");
  std::this_thread::sleep_for(50ms);
  EXPECT_TRUE(no_rx(10ms));
  // The rest of the line plus data the guest should get after the handshake.
  write_str(fd.get(), "ECT 7\nhello guest");
  auto req = next_rx();
  ASSERT_TRUE(req);
  ASSERT_EQ(req->h.op, vsock::kOpRequest);
  EXPECT_EQ(req->h.dst_port, 7u);
  EXPECT_TRUE(no_rx(50ms)) << "data before the RESPONSE";
  send(guest_hdr(7, req->h.src_port, vsock::kOpResponse));
  EXPECT_EQ(read_line(fd.get()), "OK " + std::to_string(req->h.src_port) + "\n");
  Conn c;
  c.host_port = req->h.src_port;
  c.guest_port = 7;
  auto got = guest_read(c, 11);
  EXPECT_EQ(std::string(got.begin(), got.end()), "hello guest");
}

TEST_F(VirtioVsockTest, ControlPacketsWaitForRxBuffers) {
  start();
  UniqueFd fd = unix_connect(uds_);
  write_str(fd.get(), "CONNECT 1000\n");
  ASSERT_TRUE(wait_until([&] { return dev_->connection_count() == 1; }));
  EXPECT_TRUE(no_rx(100ms));
  give_rx(1);  // the rx kick retries
  auto req = next_rx();
  ASSERT_TRUE(req);
  EXPECT_EQ(req->h.op, vsock::kOpRequest);
  EXPECT_EQ(req->h.dst_port, 1000u);
}

// --- Data ------------------------------------------------------------------------------

TEST_F(VirtioVsockTest, HostToGuestData) {
  start();
  give_rx();
  Conn c = host_connect(52);
  const auto data = pattern(10000, 1);
  write_all(c.fd.get(), data.data(), data.size());
  EXPECT_EQ(guest_read(c, data.size()), data);
  EXPECT_EQ(dev_->stats().rx_bytes, data.size());
}

TEST_F(VirtioVsockTest, GuestToHostData) {
  start();
  give_rx();
  Conn c = host_connect(52);
  const auto a = pattern(3000, 2), b = pattern(700, 3);
  send(guest_hdr(52, c.host_port, vsock::kOpRw, static_cast<uint32_t>(a.size())), a);
  send(guest_hdr(52, c.host_port, vsock::kOpRw, static_cast<uint32_t>(b.size())), b, true);
  auto got = read_n(c.fd.get(), a.size() + b.size());
  std::vector<uint8_t> want = a;
  want.insert(want.end(), b.begin(), b.end());
  EXPECT_EQ(got, want);
  EXPECT_EQ(dev_->stats().tx_bytes, want.size());
  // Payload split over several descriptors.
  const auto d = pattern(5000, 4);
  auto hb = bytes(guest_hdr(52, c.host_port, vsock::kOpRw, 5000));
  std::vector<uint8_t> p1(d.begin(), d.begin() + 1), p2(d.begin() + 1, d.begin() + 4000),
      p3(d.begin() + 4000, d.end());
  send_segs({{txd_.alloc_bytes(hb), kHdrSize, false},
             {txd_.alloc_bytes(p1), 1, false},
             {txd_.alloc_bytes(p2), 3999, false},
             {txd_.alloc_bytes(p3), 1000, false}});
  EXPECT_EQ(read_n(c.fd.get(), d.size()), d);
}

TEST_F(VirtioVsockTest, GuestToHostBuffersWhileSocketIsFullThenCreditUpdate) {
  start();
  give_rx();
  Conn c = host_connect(52);
  // 256 KiB (all our credit) while the host process does not read: more than
  // the Unix socket takes, so the device buffers the rest.
  const auto data = pattern(256 * 1024, 5);
  for (size_t off = 0; off < data.size(); off += 65536) {
    std::vector<uint8_t> chunk(data.begin() + off, data.begin() + off + 65536);
    send(guest_hdr(52, c.host_port, vsock::kOpRw, 65536), chunk);
  }
  EXPECT_EQ(dev_->connection_count(), 1u);
  EXPECT_GE(dev_->stats().host_write_blocked, 1u) << "the socket never filled up";
  EXPECT_EQ(read_n(c.fd.get(), data.size(), 5000), data);
  // Consumption is announced: fwd_cnt reaches everything written.
  uint32_t fwd = 0;
  for (int i = 0; i < 100 && fwd < data.size(); ++i) {
    auto p = next_rx(1s);
    if (!p) break;
    EXPECT_EQ(p->h.op, vsock::kOpCreditUpdate);
    EXPECT_EQ(p->h.dst_port, 52u);
    EXPECT_EQ(p->h.buf_alloc, 256u * 1024);
    fwd = p->h.fwd_cnt;
  }
  if (fwd < data.size()) {  // the last quarter is given on request
    send(guest_hdr(52, c.host_port, vsock::kOpCreditRequest));
    auto p = next_rx();
    ASSERT_TRUE(p);
    EXPECT_EQ(p->h.op, vsock::kOpCreditUpdate);
    fwd = p->h.fwd_cnt;
  }
  EXPECT_EQ(fwd, data.size());
}

TEST_F(VirtioVsockTest, GuestExceedingCreditIsReset) {
  start();
  give_rx();
  Conn c = host_connect(52);
  const auto chunk = pattern(65536, 6);
  bool reset = false;
  // The socket holds some, we hold at most buf_alloc more: within 1.5 MiB of
  // unread data the guest must have been cut off.
  for (int i = 0; i < 24 && !reset; ++i) {
    send(guest_hdr(52, c.host_port, vsock::kOpRw, 65536), chunk);
    while (rxd_.pending_used() > 0) {
      auto p = next_rx();
      if (p && p->h.op == vsock::kOpRst) reset = true;
    }
  }
  EXPECT_TRUE(reset);
  EXPECT_TRUE(wait_eof(c.fd.get(), 5000));
  EXPECT_EQ(dev_->connection_count(), 0u);
}

TEST_F(VirtioVsockTest, CreditExhaustionStopsReading) {
  start();
  give_rx();
  Conn c = host_connect(52, /*guest_buf=*/8192);
  const auto data = pattern(20000, 7);
  write_all(c.fd.get(), data.data(), data.size());
  auto got = guest_read(c, 8192);
  ASSERT_EQ(got.size(), 8192u);
  // No more data without credit; at most one CREDIT_REQUEST.
  std::this_thread::sleep_for(100ms);
  int credit_requests = 0;
  while (rxd_.pending_used() > 0) {
    auto p = next_rx();
    ASSERT_TRUE(p);
    ASSERT_EQ(p->h.op, vsock::kOpCreditRequest);
    ++credit_requests;
  }
  EXPECT_LE(credit_requests, 1);
  EXPECT_EQ(dev_->stats().rx_bytes, 8192u);
  EXPECT_GE(dev_->stats().credit_stalls, 1u);
  // And the socket is not polled meanwhile (no busy loop on EPOLLIN).
  const uint64_t wakeups = dev_->stats().socket_wakeups;
  std::this_thread::sleep_for(200ms);
  EXPECT_LE(dev_->stats().socket_wakeups, wakeups + 1);
  EXPECT_TRUE(no_rx(10ms));
  // The guest consumed 8 KiB: 8 KiB more flows, and so on.
  send(guest_hdr(52, c.host_port, vsock::kOpCreditUpdate, 0, 8192, 8192));
  auto more = guest_read(c, 8192);
  got.insert(got.end(), more.begin(), more.end());
  send(guest_hdr(52, c.host_port, vsock::kOpCreditUpdate, 0, 8192, 16384));
  more = guest_read(c, 20000 - 16384);
  got.insert(got.end(), more.begin(), more.end());
  EXPECT_EQ(got, data);
}

// --- Guest-initiated connections --------------------------------------------------------

TEST_F(VirtioVsockTest, GuestConnectToListener) {
  start();
  give_rx();
  UniqueFd listener = unix_listen(uds_ + "_1234");
  ASSERT_TRUE(listener.valid());
  Conn c = guest_connect(listener.get(), 1234, 40000);
  ASSERT_TRUE(c.fd.valid());
  EXPECT_EQ(dev_->stats().guest_connects, 1u);
  const auto up = pattern(6000, 8);
  send(guest_hdr(40000, 1234, vsock::kOpRw, 6000), up);
  EXPECT_EQ(read_n(c.fd.get(), up.size()), up);
  const auto down = pattern(9000, 9);
  write_all(c.fd.get(), down.data(), down.size());
  EXPECT_EQ(guest_read(c, down.size()), down);
}

TEST_F(VirtioVsockTest, GuestConnectWithoutListenerGetsRst) {
  start();
  give_rx();
  send(guest_hdr(40001, 4321, vsock::kOpRequest));
  auto p = next_rx();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->h.op, vsock::kOpRst);
  EXPECT_EQ(p->h.src_port, 4321u);
  EXPECT_EQ(p->h.dst_port, 40001u);
  EXPECT_EQ(p->h.src_cid, vsock::kCidHost);
  EXPECT_EQ(p->h.dst_cid, kCid);
  EXPECT_EQ(dev_->connection_count(), 0u);
  EXPECT_EQ(dev_->stats().guest_connect_fails, 1u);
}

// --- Shutdown and reset ------------------------------------------------------------------

TEST_F(VirtioVsockTest, GuestShutdownBothClosesAndResets) {
  start();
  give_rx();
  Conn c = host_connect(52);
  send(guest_hdr(52, c.host_port, vsock::kOpShutdown), {});
  // flags 0 changes nothing
  EXPECT_TRUE(quiet(c.fd.get()));
  Header h = guest_hdr(52, c.host_port, vsock::kOpShutdown);
  h.flags = vsock::kShutdownBoth;
  send(h);
  EXPECT_TRUE(wait_eof(c.fd.get()));
  auto p = next_non_credit();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->h.op, vsock::kOpRst);
  EXPECT_EQ(p->h.dst_port, 52u);
  EXPECT_EQ(dev_->connection_count(), 0u);
}

TEST_F(VirtioVsockTest, GuestRstClosesWithoutReply) {
  start();
  give_rx();
  Conn c = host_connect(52);
  send(guest_hdr(52, c.host_port, vsock::kOpRst));
  EXPECT_TRUE(wait_eof(c.fd.get()));
  EXPECT_EQ(dev_->connection_count(), 0u);
  EXPECT_TRUE(no_rx());
}

TEST_F(VirtioVsockTest, HostCloseSendsShutdownThenGuestRst) {
  start();
  give_rx();
  Conn c = host_connect(52);
  write_str(c.fd.get(), "bye");
  c.fd.reset();
  auto data = guest_read(c, 3);
  EXPECT_EQ(std::string(data.begin(), data.end()), "bye");
  auto p = next_non_credit();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->h.op, vsock::kOpShutdown);
  EXPECT_EQ(p->h.flags, vsock::kShutdownBoth);
  EXPECT_EQ(dev_->connection_count(), 1u);  // until the guest answers
  send(guest_hdr(52, c.host_port, vsock::kOpRst));
  EXPECT_EQ(dev_->connection_count(), 0u);
  EXPECT_TRUE(no_rx());
}

TEST_F(VirtioVsockTest, HalfCloseBothWays) {
  start();
  give_rx();
  UniqueFd listener = unix_listen(uds_ + "_77");
  Conn c = guest_connect(listener.get(), 77, 5000);
  ASSERT_TRUE(c.fd.valid());
  // The host process stops sending: SHUTDOWN(SEND) only; it can still receive.
  ASSERT_EQ(::shutdown(c.fd.get(), SHUT_WR), 0);
  auto p = next_non_credit();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->h.op, vsock::kOpShutdown);
  EXPECT_EQ(p->h.flags, vsock::kShutdownSend);
  send(guest_hdr(5000, 77, vsock::kOpRw, 4), {'a', 'b', 'c', 'd'});
  auto got = read_n(c.fd.get(), 4);
  EXPECT_EQ(std::string(got.begin(), got.end()), "abcd");
  // The guest stops sending too: the host sees EOF, the device resets.
  Header h = guest_hdr(5000, 77, vsock::kOpShutdown);
  h.flags = vsock::kShutdownSend;
  send(h);
  EXPECT_TRUE(wait_eof(c.fd.get()));
  p = next_non_credit();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->h.op, vsock::kOpRst);
  EXPECT_EQ(dev_->connection_count(), 0u);
}

TEST_F(VirtioVsockTest, GuestSendShutdownFlushesBufferedDataFirst) {
  start();
  give_rx();
  Conn c = host_connect(52);
  const auto data = pattern(256 * 1024, 10);
  for (size_t off = 0; off < data.size(); off += 65536) {
    std::vector<uint8_t> chunk(data.begin() + off, data.begin() + off + 65536);
    send(guest_hdr(52, c.host_port, vsock::kOpRw, 65536), chunk);
  }
  Header h = guest_hdr(52, c.host_port, vsock::kOpShutdown);
  h.flags = vsock::kShutdownSend;
  send(h);
  // Still open for the host -> guest direction.
  write_str(c.fd.get(), "xy");
  // All data, then EOF.
  EXPECT_EQ(read_n(c.fd.get(), data.size(), 5000), data);
  EXPECT_TRUE(wait_eof(c.fd.get()));
  std::vector<uint8_t> got;
  for (int i = 0; i < 100 && got.size() < 2; ++i) {
    auto p = next_non_credit();
    ASSERT_TRUE(p);
    ASSERT_EQ(p->h.op, vsock::kOpRw);
    got.insert(got.end(), p->payload.begin(), p->payload.end());
  }
  EXPECT_EQ(std::string(got.begin(), got.end()), "xy");
  EXPECT_EQ(dev_->connection_count(), 1u);
}

// --- Malformed packets from the guest ----------------------------------------------------

TEST_F(VirtioVsockTest, MalformedPacketsAreDroppedOrReset) {
  start();
  give_rx();
  Conn c = host_connect(52);
  const uint64_t dropped0 = dev_->stats().tx_dropped;

  // Shorter than a header: dropped.
  auto hb = bytes(guest_hdr(52, c.host_port, vsock::kOpRw, 0));
  send_segs({{txd_.alloc_bytes(std::vector<uint8_t>(hb.begin(), hb.begin() + 20)), 20, false}});
  // Only device-writable buffers: nothing to read, dropped.
  send_segs({{txd_.alloc(64), 64, true}});
  // A chain outside guest memory: dropped, queue keeps working.
  send_segs({{kMemSize + 0x1000, 64, false}});
  // Wrong CIDs: dropped without an answer (nobody to answer).
  Header h = guest_hdr(52, c.host_port, vsock::kOpRw, 1);
  h.src_cid = 4;
  send(h, {'x'});
  h = guest_hdr(52, c.host_port, vsock::kOpRw, 1);
  h.dst_cid = kCid;
  send(h, {'x'});
  h = guest_hdr(52, c.host_port, vsock::kOpRequest);
  h.dst_cid = 1;
  send(h);
  EXPECT_EQ(dev_->stats().tx_dropped, dropped0 + 6);
  EXPECT_TRUE(no_rx());
  EXPECT_TRUE(quiet(c.fd.get()));
  EXPECT_EQ(dev_->connection_count(), 1u);

  // Unknown port / unknown op / RW without a connection: RST, never for RST.
  send(guest_hdr(9, 9999, vsock::kOpRw, 1), {'x'});
  send(guest_hdr(9, 9999, 99));
  send(guest_hdr(9, 9999, vsock::kOpRst));
  for (int i = 0; i < 2; ++i) {
    auto p = next_rx();
    ASSERT_TRUE(p);
    EXPECT_EQ(p->h.op, vsock::kOpRst);
    EXPECT_EQ(p->h.src_port, 9999u);
    EXPECT_EQ(p->h.dst_port, 9u);
  }
  EXPECT_TRUE(no_rx());

  // Wrong type (SEQPACKET is not offered): RST, the connection is gone.
  h = guest_hdr(52, c.host_port, vsock::kOpRw, 1);
  h.type = vsock::kTypeSeqpacket;
  send(h, {'x'});
  auto p = next_rx();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->h.op, vsock::kOpRst);
  EXPECT_TRUE(wait_eof(c.fd.get()));
  EXPECT_EQ(dev_->connection_count(), 0u);

  // len beyond the chain: RST.
  Conn c2 = host_connect(53);
  send(guest_hdr(53, c2.host_port, vsock::kOpRw, 1000), pattern(10, 1));
  p = next_rx();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->h.op, vsock::kOpRst);
  EXPECT_TRUE(wait_eof(c2.fd.get()));
  // len above 64 KiB even though the chain has it: RST.
  Conn c3 = host_connect(54);
  send(guest_hdr(54, c3.host_port, vsock::kOpRw, 70000), pattern(70000, 2));
  p = next_rx();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->h.op, vsock::kOpRst);
  EXPECT_TRUE(wait_eof(c3.fd.get()));
  // A RESPONSE on an established connection, a REQUEST on a live one: RST.
  Conn c4 = host_connect(55);
  send(guest_hdr(55, c4.host_port, vsock::kOpResponse));
  p = next_rx();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->h.op, vsock::kOpRst);
  EXPECT_TRUE(wait_eof(c4.fd.get()));
  EXPECT_EQ(dev_->connection_count(), 0u);

  // The device still works.
  Conn ok = host_connect(56);
  send(guest_hdr(56, ok.host_port, vsock::kOpRw, 2), {'o', 'k'});
  auto got = read_n(ok.fd.get(), 2);
  EXPECT_EQ(std::string(got.begin(), got.end()), "ok");
}

TEST_F(VirtioVsockTest, BadRxBuffersAreReturnedAndSkipped) {
  start();
  auto_refill_ = false;
  // A too-small rx buffer, then a good one.
  const uint64_t small = kRxSlots + kSlotSize * 63;  // a slot give_rx never uses
  const uint16_t bad_head = rxd_.add_chain({{small, 20, true}});
  send(guest_hdr(40002, 4444, vsock::kOpRequest));  // queues an RST
  kick(vsock::kRxQueue);
  ASSERT_TRUE(wait_until([&] { return rxd_.pending_used() > 0; }));
  auto used = rxd_.pop_used();
  ASSERT_TRUE(used);
  EXPECT_EQ(used->id, bad_head);
  EXPECT_EQ(used->len, 0u);
  EXPECT_EQ(dev_->stats().bad_rx_chains, 1u);
  give_rx(1);
  auto p = next_rx();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->h.op, vsock::kOpRst);
}

// --- Limits, reset, events ---------------------------------------------------------------

TEST_F(VirtioVsockTest, ConnectionLimit) {
  start([](VsockConfig& c) { c.max_connections = 3; });
  give_rx();
  std::vector<UniqueFd> fds;
  for (int i = 0; i < 3; ++i) {
    fds.push_back(unix_connect(uds_));
    write_str(fds.back().get(), "CONNECT 1\n");
  }
  ASSERT_TRUE(wait_until([&] { return dev_->connection_count() == 3; }));
  UniqueFd extra = unix_connect(uds_);
  ASSERT_TRUE(extra.valid());
  EXPECT_TRUE(wait_eof(extra.get()));
  EXPECT_EQ(dev_->stats().refused, 1u);
  // Guest-initiated is refused too.
  UniqueFd listener = unix_listen(uds_ + "_9");
  std::vector<Packet> pkts;
  while (auto p = next_rx(300ms)) pkts.push_back(*p);  // the 3 REQUESTs
  EXPECT_EQ(pkts.size(), 3u);
  send(guest_hdr(600, 9, vsock::kOpRequest));
  auto p = next_rx();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->h.op, vsock::kOpRst);
  EXPECT_EQ(dev_->connection_count(), 3u);
}

TEST_F(VirtioVsockTest, HandshakeTimeouts) {
  start([](VsockConfig& c) {
    c.connect_line_timeout_ms = 150;
    c.connect_timeout_ms = 150;
    c.shutdown_timeout_ms = 150;
  });
  give_rx();
  // No CONNECT line.
  UniqueFd silent = unix_connect(uds_);
  EXPECT_TRUE(wait_eof(silent.get()));
  // No answer to the REQUEST: the host sees EOF, the guest an RST.
  UniqueFd fd = unix_connect(uds_);
  write_str(fd.get(), "CONNECT 61\n");
  auto req = next_rx();
  ASSERT_TRUE(req);
  ASSERT_EQ(req->h.op, vsock::kOpRequest);
  EXPECT_TRUE(wait_eof(fd.get()));
  auto p = next_rx();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->h.op, vsock::kOpRst);
  EXPECT_EQ(p->h.src_port, req->h.src_port);
  // No RST after SHUTDOWN(both): the device resets the connection itself.
  Conn c = host_connect(62);
  c.fd.reset();
  p = next_non_credit();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->h.op, vsock::kOpShutdown);
  p = next_non_credit();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->h.op, vsock::kOpRst);
  EXPECT_EQ(p->h.dst_port, 62u);
  EXPECT_TRUE(wait_until([&] { return dev_->connection_count() == 0; }));
  EXPECT_EQ(dev_->stats().timeouts, 3u);
  // An established, idle connection is not timed out.
  UniqueFd listener = unix_listen(uds_ + "_63");
  Conn idle = guest_connect(listener.get(), 63, 63);
  std::this_thread::sleep_for(400ms);
  EXPECT_EQ(dev_->connection_count(), 1u);
  EXPECT_TRUE(quiet(idle.fd.get(), 10));
}

TEST_F(VirtioVsockTest, ResetClosesAllConnections) {
  start();
  give_rx();
  Conn a = host_connect(52);
  UniqueFd listener = unix_listen(uds_ + "_8");
  Conn b = guest_connect(listener.get(), 8, 700);
  UniqueFd pending = unix_connect(uds_);  // still before its CONNECT line
  ASSERT_TRUE(wait_until([&] { return dev_->connection_count() == 3; }));
  on_loop([&] { dev_->reset(); });
  EXPECT_EQ(dev_->connection_count(), 0u);
  EXPECT_TRUE(wait_eof(a.fd.get()));
  EXPECT_TRUE(wait_eof(b.fd.get()));
  EXPECT_TRUE(wait_eof(pending.get()));
  // Still bound: a client can connect (it waits for the next activation).
  UniqueFd later = unix_connect(uds_);
  EXPECT_TRUE(later.valid());
}

TEST_F(VirtioVsockTest, TransportResetEvent) {
  start();
  give_rx();
  Conn a = host_connect(52);
  // No event buffer yet: the event waits.
  on_loop([&] { dev_->send_transport_reset(); });
  EXPECT_TRUE(wait_eof(a.fd.get()));
  EXPECT_EQ(dev_->connection_count(), 0u);
  EXPECT_EQ(evd_.pending_used(), 0);
  const uint64_t buf = evd_.alloc(4);
  evd_.fill(buf, 4, 0xee);
  evd_.add_chain({{buf, 4, true}});
  kick(vsock::kEventQueue);
  auto used = evd_.pop_used();
  ASSERT_TRUE(used);
  EXPECT_EQ(used->len, 4u);
  EXPECT_EQ(evd_.read_bytes(buf, 4), std::vector<uint8_t>(4, 0));  // TRANSPORT_RESET = 0
  EXPECT_TRUE(no_rx()) << "connections vanish without RST";
}

TEST_F(VirtioVsockTest, TwoHundredConnectionsLeakNoFds) {
  start();
  give_rx();
  UniqueFd listener = unix_listen(uds_ + "_2000");
  ASSERT_TRUE(listener.valid());
  const size_t before = count_fds();
  for (int i = 0; i < 200; ++i) {
    if (i % 2 == 0) {
      // Host-initiated; the host process closes, the guest answers RST.
      Conn c = host_connect(3000 + static_cast<uint32_t>(i));
      ASSERT_TRUE(c.fd.valid());
      write_str(c.fd.get(), "x");
      c.fd.reset();
      ASSERT_EQ(guest_read(c, 1).size(), 1u);
      auto p = next_non_credit();
      ASSERT_TRUE(p);
      ASSERT_EQ(p->h.op, vsock::kOpShutdown);
      send(guest_hdr(c.guest_port, c.host_port, vsock::kOpRst));
    } else {
      // Guest-initiated; the guest closes (SHUTDOWN both), the device resets.
      Conn c = guest_connect(listener.get(), 2000, 10000 + static_cast<uint32_t>(i));
      ASSERT_TRUE(c.fd.valid());
      send(guest_hdr(c.guest_port, 2000, vsock::kOpRw, 1), {'y'});
      ASSERT_EQ(read_n(c.fd.get(), 1).size(), 1u);
      Header h = guest_hdr(c.guest_port, 2000, vsock::kOpShutdown);
      h.flags = vsock::kShutdownBoth;
      send(h);
      ASSERT_TRUE(wait_eof(c.fd.get()));
      auto p = next_non_credit();
      ASSERT_TRUE(p);
      ASSERT_EQ(p->h.op, vsock::kOpRst);
    }
  }
  EXPECT_TRUE(wait_until([&] { return dev_->connection_count() == 0; }));
  EXPECT_EQ(count_fds(), before);
  const VsockStats s = dev_->stats();
  EXPECT_EQ(s.host_connects, 100u);
  EXPECT_EQ(s.guest_connects, 100u);
}

}  // namespace
}  // namespace rz::virtio
