// virtio-vsock (virtio 1.2, section 5.10) in user space: the guest's
// AF_VSOCK stream sockets meet host processes on Unix sockets, the way
// Firecracker's vsock device presents them.
//
// Host side:
//  - Host-initiated: the device listens on `uds_path`. A host process
//    connects there and writes "CONNECT <port>\n" (decimal guest port). The
//    device sends the guest a REQUEST from the host (CID 2) on a fresh
//    ephemeral port (counting up from 2^30); when the guest answers RESPONSE
//    it writes "OK <host_port>\n" to the Unix connection, which from then on
//    carries the stream. An RST from the guest, a malformed CONNECT line, or
//    one longer than kMaxConnectLine bytes closes the Unix connection.
//  - Guest-initiated: a REQUEST to CID 2 port P makes the device connect to
//    the Unix socket "<uds_path>_P"; it answers RESPONSE if that works,
//    RST if not.
//
// Data moves as RW packets with the spec's credit-based flow control:
//  - host -> guest: the device reads a Unix socket straight into the guest's
//    rx buffers, never more than the guest's advertised credit
//    (peer buf_alloc - (bytes sent - peer fwd_cnt)). With no credit, or no rx
//    buffers, it stops polling that socket, so the data waits in the
//    kernel's socket buffer; nothing is buffered in the device. It asks for
//    credit once (CREDIT_REQUEST) when it runs out.
//  - guest -> host: RW payloads are written to the Unix socket; what the
//    socket cannot take now is kept (at most VsockConfig::buf_alloc bytes, the
//    credit the device advertises; a guest that sends more is reset) and
//    flushed on EPOLLOUT. fwd_cnt counts bytes handed to the socket; a
//    CREDIT_UPDATE goes out when the guest asks or when a quarter of
//    buf_alloc has been consumed since the last one the guest saw.
//  - SHUTDOWN from the guest half-closes the Unix socket (SEND -> shutdown
//    SHUT_WR after the buffered bytes are flushed; RCV -> stop reading). EOF
//    on the Unix socket sends SHUTDOWN(SEND), plus RCV if the host process
//    closed its end entirely. When both directions are finished the device
//    sends RST and closes the socket; an RST from the guest closes it at once.
//
// Connections that stall in a handshake are dropped after a timeout
// (VsockConfig: no CONNECT line, no answer to a REQUEST, no RST after the
// host process closed); everything else lives until either side closes it.
//
// Packets for the guest (control packets and data) are produced when rx
// buffers are available: control packets wait in a bounded per-device queue
// (kMaxControlPackets; when it is full an RST is dropped and a connection
// that needed a REQUEST/RESPONSE/SHUTDOWN is closed), data is pulled from
// the sockets that have something to read, round robin. An rx kick retries.
// Packets from the guest (tx queue) are validated: at least a whole header,
// len <= kMaxPayload and within the chain, src_cid = the guest's CID and
// dst_cid = 2 (otherwise dropped), type STREAM (otherwise RST). Connections
// are limited to VsockConfig::max_connections, Unix-side and guest-side
// together.
//
// Threading (device.h): activate(), process_queue(), reset(),
// send_transport_reset() and every fd callback run on the event-loop thread;
// read_config() runs on vCPU threads and reads only the immutable CID.
// stats() and connection_count() are thread-safe.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "util/event_loop.h"
#include "util/fd.h"
#include "virtio/device.h"
#include "virtio/vsock_packet.h"

namespace rz::virtio {

struct VsockConfig {
  uint64_t guest_cid = 3;   // 3 .. 0xfffffffe
  std::string uds_path;     // Unix socket the device listens on
  uint16_t queue_size = 256;               // all three queues; a power of 2
  uint32_t max_connections = 1024;         // open connections, both kinds
  uint32_t buf_alloc = 256 * 1024;         // per-connection guest->host buffer
  // A host process must send its CONNECT line within this time,
  uint32_t connect_line_timeout_ms = 30000;
  // the guest must answer a REQUEST (RESPONSE or RST) within this time,
  uint32_t connect_timeout_ms = 5000;
  // and answer with RST within this time once told SHUTDOWN(both) because
  // the host process closed; otherwise the connection is closed (with RST).
  uint32_t shutdown_timeout_ms = 2000;
};

// Parses the --vsock option value: "cid=3,socket=/run/vm1.vsock" (keys in any
// order; "uds_path" is accepted for "socket"). Throws rz::UsageError naming
// the problem if a key is unknown, repeated or missing, or the CID is out of
// range.
VsockConfig parse_vsock_spec(std::string_view spec);

// Counters since construction (monotonic except connections).
struct VsockStats {
  uint64_t connections = 0;         // open now
  uint64_t host_connects = 0;       // host-initiated connections established (RESPONSE seen)
  uint64_t guest_connects = 0;      // guest-initiated connections established
  uint64_t guest_connect_fails = 0; // REQUESTs answered with RST (no listener, limits)
  uint64_t refused = 0;             // Unix connections closed for the connection limit
  uint64_t bad_connect_lines = 0;   // malformed / too long CONNECT lines
  uint64_t rx_packets = 0;          // packets given to the guest
  uint64_t rx_bytes = 0;            // RW payload bytes given to the guest
  uint64_t tx_packets = 0;          // packets taken from the guest (well formed)
  uint64_t tx_bytes = 0;            // RW payload bytes taken from the guest
  uint64_t tx_dropped = 0;          // malformed packets dropped (short, bad len, bad CID)
  uint64_t rst_sent = 0;
  uint64_t rst_dropped = 0;         // RSTs lost because the control queue was full
  uint64_t credit_stalls = 0;       // times reading a socket stopped for lack of credit
  uint64_t credit_updates_sent = 0;
  uint64_t bad_rx_chains = 0;       // rx chains returned unused (malformed / too small)
  uint64_t socket_wakeups = 0;      // Unix connection fd callbacks
  uint64_t host_write_blocked = 0;  // writes to a Unix socket that could not take everything
  uint64_t timeouts = 0;            // connections closed by a VsockConfig timeout
};

class VirtioVsock final : public VirtioDevice {
 public:
  static constexpr uint32_t kMaxPayload = 64 * 1024;    // per packet, both directions
  static constexpr size_t kMaxConnectLine = 64;         // "CONNECT <port>\n" incl. newline
  static constexpr uint32_t kFirstHostPort = 1U << 30;  // ephemeral host ports from here
  static constexpr size_t kMaxControlPackets = 4096;
  static constexpr unsigned kRxBudget = 512;            // rx chains filled per turn
  static constexpr unsigned kTxBudget = 256;            // tx chains handled per turn
  static constexpr unsigned kAcceptBudget = 64;         // accepts per listener wake-up
  static constexpr long kTimerTickMs = 100;             // deadline check period

  // Validates `config` and binds + listens on config.uds_path (a stale socket
  // file there is removed first; one that a live process still listens on,
  // or a file that is not a socket, is an error). Throws rz::UsageError if
  // the config is invalid or the socket cannot be bound. The listener and
  // connections are registered with `loop` between activate() and reset();
  // the loop must outlive the device.
  VirtioVsock(EventLoop& loop, const VsockConfig& config);
  // Closes everything and removes the socket file it created.
  ~VirtioVsock() override;
  VirtioVsock(const VirtioVsock&) = delete;
  VirtioVsock& operator=(const VirtioVsock&) = delete;

  uint16_t device_type() const override;
  std::string name() const override { return "virtio-vsock"; }
  uint64_t device_features() const override;
  uint16_t num_queues() const override { return 3; }
  uint16_t queue_max_size(uint16_t) const override { return config_.queue_size; }
  void read_config(uint64_t offset, std::span<uint8_t> data) override;
  bool activate(const memory::GuestMemory& mem, uint64_t negotiated_features,
                std::vector<Queue*> queues, std::shared_ptr<Interrupt> irq) override;
  void process_queue(uint16_t index) override;
  void reset() override;

  // The hook for snapshot restore: closes every connection (without RST;
  // the guest drops its own on the event) and queues a
  // VIRTIO_VSOCK_EVENT_TRANSPORT_RESET on the event queue, delivered as soon
  // as the driver has an event buffer there. Loop thread only, while active.
  void send_transport_reset();

  const VsockConfig& config() const { return config_; }
  VsockStats stats() const;
  size_t connection_count() const { return num_connections_.load(std::memory_order_relaxed); }

 private:
  struct Connection;
  struct Control {
    uint64_t conn_id = 0;  // 0: not tied to a live connection (an RST)
    uint32_t local_port = 0;
    uint32_t peer_port = 0;
    uint16_t op = 0;
    uint32_t flags = 0;
  };
  struct Counters {
    std::atomic<uint64_t> host_connects{0}, guest_connects{0}, guest_connect_fails{0};
    std::atomic<uint64_t> refused{0}, bad_connect_lines{0};
    std::atomic<uint64_t> rx_packets{0}, rx_bytes{0}, tx_packets{0}, tx_bytes{0}, tx_dropped{0};
    std::atomic<uint64_t> rst_sent{0}, rst_dropped{0}, credit_stalls{0}, credit_updates_sent{0};
    std::atomic<uint64_t> bad_rx_chains{0}, socket_wakeups{0}, host_write_blocked{0};
    std::atomic<uint64_t> timeouts{0};
  };
  using PortKey = std::pair<uint32_t, uint32_t>;  // (host port, guest port)

  void bind_listener();
  void on_listener(uint32_t events);
  void resume_listener();
  void on_kick(uint32_t events);
  void on_timer(uint32_t events);
  void set_deadline(Connection& c, uint32_t ms);
  void set_timer(bool on);
  void on_conn_event(uint64_t id, uint32_t events);
  void kick_self();

  Connection* find(uint64_t id);
  Connection* find(uint32_t local_port, uint32_t peer_port);
  Connection& add_connection(UniqueFd fd);
  // Closes a connection; with `rst`, queues an RST for the guest if it knows it.
  void close_connection(uint64_t id, bool rst);
  void close_all_connections();
  void update_interest(Connection& c);
  bool wants_read(const Connection& c) const;
  uint32_t peer_credit(const Connection& c) const;

  // Host side.
  void read_connect_line(uint64_t id);
  void start_host_connect(uint64_t id, uint32_t guest_port);
  // Writes buffered guest->host bytes; false if the connection was closed.
  bool flush_to_host(uint64_t id);
  // Closes the connection (with RST) once both directions are finished.
  void maybe_finish(uint64_t id);
  void credit_bookkeeping(Connection& c);

  // Guest side.
  bool queue_control(const Control& ctl);
  bool queue_control(const Connection& c, uint16_t op, uint32_t flags = 0);
  void queue_rst(uint32_t local_port, uint32_t peer_port);
  vsock::Header header_for(const Connection& c, uint16_t op) const;
  void fill_rx();
  // Fills one rx chain with data from `c`: 1 used, 0 nothing to read / no
  // progress (chain given back), -1 no chain available.
  int deliver_data(uint64_t id);
  void process_tx();
  void handle_packet(const DescriptorChain& chain);
  void handle_for_connection(Connection& c, const vsock::Header& h, const DescriptorChain& chain);
  void guest_connect(const vsock::Header& h);
  void deliver_events();
  void mark_rx_ready(Connection& c);

  EventLoop& loop_;
  const VsockConfig config_;
  UniqueFd listener_;
  bool unlink_on_close_ = false;
  uint64_t socket_ino_ = 0;
  uint64_t socket_dev_ = 0;
  UniqueFd kick_fd_;
  UniqueFd timer_fd_;  // deadline ticks (VsockConfig timeouts)
  bool timer_armed_ = false;

  // Set by activate(), cleared by reset(); loop thread only.
  bool active_ = false;
  const memory::GuestMemory* mem_ = nullptr;
  Queue* rxq_ = nullptr;
  Queue* txq_ = nullptr;
  Queue* evq_ = nullptr;
  std::shared_ptr<Interrupt> irq_;
  bool tx_pending_ = false;       // the tx budget ran out; continue via kick_fd_
  bool event_pending_ = false;    // a transport-reset event waits for a buffer
  bool listener_paused_ = false;  // accept() failed for lack of resources

  std::unordered_map<uint64_t, std::unique_ptr<Connection>> conns_;
  std::map<PortKey, uint64_t> ports_;
  std::deque<Control> control_;
  std::deque<uint64_t> rx_ready_;  // connections with data to read (ids, each once)
  uint64_t next_id_ = 1;
  uint32_t next_host_port_ = kFirstHostPort;
  std::vector<iovec> iov_;

  std::atomic<size_t> num_connections_{0};
  Counters counters_;
};

}  // namespace rz::virtio
