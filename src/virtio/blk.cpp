#include "virtio/blk.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "util/error.h"
#include "util/log.h"
#include "virtio/virtio_defs.h"

namespace rz::virtio {

namespace {

// Guest-triggerable and host I/O error messages: the first few are logged,
// the rest only counted, so a guest cannot flood the log.
constexpr uint64_t kMaxLoggedErrors = 10;

void put_le16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, sizeof v); }
void put_le32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, sizeof v); }
void put_le64(uint8_t* p, uint64_t v) { std::memcpy(p, &v, sizeof v); }

bool parse_bool(const std::string& v, bool* out) {
  if (v == "on" || v == "true" || v == "yes" || v == "1") *out = true;
  else if (v == "off" || v == "false" || v == "no" || v == "0") *out = false;
  else return false;
  return true;
}

void check_serial(const std::string& s) {
  if (s.size() > kVirtioBlkIdBytes) {
    throw UsageError("--disk serial=" + s + ": longer than " + std::to_string(kVirtioBlkIdBytes) +
                     " bytes");
  }
  for (char c : s) {
    if (c < 0x20 || c > 0x7e) throw UsageError("--disk serial: only printable ASCII is allowed");
  }
}

// [sector, sector + count) lies within `capacity` sectors (no overflow).
bool range_ok(uint64_t sector, uint64_t count, uint64_t capacity) {
  return sector <= capacity && count <= capacity - sector;
}

// iovecs for `len` bytes of `bufs` seen as one stream, starting `skip` bytes
// in. False if they would need more than BlockBackend::kMaxIov entries.
bool build_iov(std::span<const Buffer> bufs, uint64_t skip, uint64_t len,
               std::vector<iovec>& out) {
  out.clear();
  for (const Buffer& b : bufs) {
    if (len == 0) break;
    if (skip >= b.len) {
      skip -= b.len;
      continue;
    }
    const uint64_t n = std::min<uint64_t>(b.len - skip, len);
    if (out.size() == BlockBackend::kMaxIov) return false;
    out.push_back(iovec{b.host.data() + skip, static_cast<size_t>(n)});
    len -= n;
    skip = 0;
  }
  return len == 0;
}

}  // namespace

// --- Configuration --------------------------------------------------------------

BlkConfig parse_blk_config(std::string_view spec) {
  // Split on ',' with ",," as a literal comma.
  std::vector<std::string> parts(1);
  for (size_t i = 0; i < spec.size(); ++i) {
    if (spec[i] == ',') {
      if (i + 1 < spec.size() && spec[i + 1] == ',') {
        parts.back() += ',';
        ++i;
      } else {
        parts.emplace_back();
      }
    } else {
      parts.back() += spec[i];
    }
  }

  BlkConfig c;
  bool have_path = false, have_ro = false, have_engine = false, have_serial = false,
       have_queues = false;
  auto once = [](bool& seen, const std::string& key) {
    if (seen) throw UsageError("--disk: " + key + "= given twice");
    seen = true;
  };
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string& p = parts[i];
    const size_t eq = p.find('=');
    if (eq == std::string::npos) {
      if (i == 0 && !p.empty()) {
        once(have_path, "path");
        c.path = p;
        continue;
      }
      throw UsageError("--disk: expected key=value, got '" + p + "'");
    }
    const std::string key = p.substr(0, eq);
    const std::string value = p.substr(eq + 1);
    if (key == "path") {
      once(have_path, "path");
      c.path = value;
    } else if (key == "readonly" || key == "ro") {
      once(have_ro, "readonly");
      if (!parse_bool(value, &c.readonly)) {
        throw UsageError("--disk readonly=" + value + ": expected on or off");
      }
    } else if (key == "engine") {
      once(have_engine, "engine");
      if (value == "sync") c.engine = BlockEngine::kSync;
      else if (value == "io_uring") c.engine = BlockEngine::kIoUring;
      else throw UsageError("--disk engine=" + value + ": expected sync or io_uring");
    } else if (key == "serial" || key == "id") {
      once(have_serial, "serial");
      check_serial(value);
      c.serial = value;
    } else if (key == "queues" || key == "num_queues") {
      once(have_queues, "queues");
      char* end = nullptr;
      errno = 0;
      const unsigned long n = std::strtoul(value.c_str(), &end, 10);
      if (value.empty() || *end != '\0' || errno != 0 || n < 1 || n > VirtioBlk::kMaxQueues ||
          value[0] == '-' || value[0] == '+') {
        throw UsageError("--disk queues=" + value + ": expected a number from 1 to " +
                         std::to_string(VirtioBlk::kMaxQueues));
      }
      c.queues = static_cast<uint16_t>(n);
    } else {
      throw UsageError("--disk: unknown key '" + key +
                       "' (known: path, readonly, engine, serial, queues)");
    }
  }
  if (c.path.empty()) throw UsageError("--disk: path= is required");
  return c;
}

std::string default_blk_serial(const std::string& path) {
  std::error_code ec;
  std::filesystem::path abs = std::filesystem::absolute(path, ec);
  const std::string full = ec ? path : abs.lexically_normal().string();
  uint32_t h = 2166136261u;  // FNV-1a
  for (unsigned char c : full) {
    h ^= c;
    h *= 16777619u;
  }
  std::string name = std::filesystem::path(full).filename().string();
  if (name.size() > 11) name.resize(11);
  for (char& c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) c = '_';
  }
  char hex[9];
  std::snprintf(hex, sizeof hex, "%08x", h);
  return name.empty() ? std::string("rz-") + hex : name + "-" + hex;
}

// --- Construction -------------------------------------------------------------

VirtioBlk::VirtioBlk(const BlkConfig& config, EventLoop* loop)
    : path_(config.path), readonly_(config.readonly), loop_(loop),
      num_queues_(config.queues == 0 ? 1 : config.queues) {
  if (path_.empty()) throw UsageError("--disk: path= is required");
  if (num_queues_ > kMaxQueues) {
    throw UsageError("--disk queues=" + std::to_string(num_queues_) + ": at most " +
                     std::to_string(kMaxQueues));
  }
  check_serial(config.serial);
  serial_ = config.serial.empty() ? default_blk_serial(path_) : config.serial;
  open_image(config);
}

void VirtioBlk::open_image(const BlkConfig& config) {
  const std::string what = "disk " + path_;
  const int flags = (readonly_ ? O_RDONLY : O_RDWR) | O_CLOEXEC;
  fd_.reset(::open(path_.c_str(), flags));
  if (!fd_.valid()) {
    const int e = errno;
    std::string msg = errno_message("cannot open " + what + (readonly_ ? "" : " for writing"), e);
    if (!readonly_ && (e == EACCES || e == EROFS || e == EPERM)) msg += " (readonly=on?)";
    throw UsageError(msg);
  }

  struct stat st {};
  if (::fstat(fd_.get(), &st) < 0) throw UsageError(errno_message("fstat " + what, errno));
  uint64_t bytes = 0;
  if (S_ISREG(st.st_mode)) {
    bytes = static_cast<uint64_t>(st.st_size);
  } else if (S_ISBLK(st.st_mode)) {
    if (::ioctl(fd_.get(), BLKGETSIZE64, &bytes) < 0) {
      throw UsageError(errno_message("BLKGETSIZE64 " + what, errno));
    }
  } else {
    throw UsageError(what + " is not a regular file or a block device");
  }

  // One writer, or any number of readers, per image, across processes (and
  // across open file descriptions in one process).
  struct flock lk {};
  lk.l_type = readonly_ ? F_RDLCK : F_WRLCK;
  lk.l_whence = SEEK_SET;
  lk.l_start = 0;
  lk.l_len = 0;  // the whole file
  if (::fcntl(fd_.get(), F_OFD_SETLK, &lk) < 0) {
    const int e = errno;
    if (e == EAGAIN || e == EACCES) throw UsageError(what + " is in use by another process");
    log::warn(errno_message(what + ": cannot lock the image (continuing unlocked)", e));
  }

  capacity_ = bytes / kSectorSize;
  if (capacity_ == 0) {
    throw UsageError(what + " is smaller than one 512-byte sector (" + std::to_string(bytes) +
                     " bytes)");
  }
  if (bytes % kSectorSize != 0) {
    log::warn(what + ": size " + std::to_string(bytes) +
              " is not a multiple of 512; the guest sees " + std::to_string(capacity_) +
              " sectors and not the last " + std::to_string(bytes % kSectorSize) + " bytes");
  }

  // Discard granularity: the file system's block (a punched hole frees whole
  // blocks), as 512-byte sectors.
  uint32_t align = 1;
  if (st.st_blksize >= 512 && st.st_blksize <= (1 << 20) &&
      (st.st_blksize & (st.st_blksize - 1)) == 0) {
    align = static_cast<uint32_t>(st.st_blksize / 512);
  }

  features_ = feature_bit(kVirtioFVersion1) | feature_bit(kVirtioFIndirectDesc) |
              feature_bit(kVirtioFEventIdx) | feature_bit(kVirtioBlkFSizeMax) |
              feature_bit(kVirtioBlkFSegMax) | feature_bit(kVirtioBlkFBlkSize) |
              feature_bit(kVirtioBlkFFlush);
  if (num_queues_ > 1) features_ |= feature_bit(kVirtioBlkFMq);
  if (readonly_) {
    features_ |= feature_bit(kVirtioBlkFRo);
  } else {
    // Offered on every file system: where fallocate cannot punch or zero a
    // range, discard does nothing and write-zeroes writes zeroes.
    features_ |= feature_bit(kVirtioBlkFDiscard) | feature_bit(kVirtioBlkFWriteZeroes);
  }
  build_config_space(align);

  backend_ = make_block_backend(
      config.engine, fd_.get(),
      [this](uint64_t cookie, int result) { on_backend_done(cookie, result); }, what);
  log::info(what + ": " + std::to_string(capacity_) + " sectors, " +
            (readonly_ ? "read-only" : "read-write") + ", engine=" + to_string(config.engine) +
            ", serial " + serial_);
  pending_.resize(backend_->max_in_flight());
  free_pending_.reserve(pending_.size());
  for (uint32_t i = static_cast<uint32_t>(pending_.size()); i-- > 0;) free_pending_.push_back(i);
}

void VirtioBlk::build_config_space(uint32_t discard_alignment) {
  using L = VirtioBlkConfigLayout;
  uint8_t* c = config_.data();
  put_le64(c + L::kCapacity, capacity_);
  put_le32(c + L::kSizeMax, kSizeMax);
  put_le32(c + L::kSegMax, kSegMax);
  put_le32(c + L::kBlkSize, kSectorSize);
  put_le16(c + L::kNumQueues, num_queues_);
  if (!readonly_) {
    put_le32(c + L::kMaxDiscardSectors, kMaxDiscardSectors);
    put_le32(c + L::kMaxDiscardSeg, 1);
    put_le32(c + L::kDiscardSectorAlignment, discard_alignment);
    put_le32(c + L::kMaxWriteZeroesSectors, kMaxWriteZeroesSectors);
    put_le32(c + L::kMaxWriteZeroesSeg, 1);
    c[L::kWriteZeroesMayUnmap] = 1;  // with the unmap flag, a hole may be punched
  }
}

VirtioBlk::~VirtioBlk() {
  if (fd_registered_ && loop_ != nullptr) loop_->remove(backend_->event_fd());
  active_ = false;
  self_.reset();
  // Wait for requests still in flight (the kernel may be writing into guest
  // memory) while the bookkeeping their completions touch still exists.
  backend_->drain();
  backend_.reset();
}

uint16_t VirtioBlk::device_type() const { return kDeviceIdBlock; }

void VirtioBlk::read_config(uint64_t offset, std::span<uint8_t> data) {
  for (size_t i = 0; i < data.size(); ++i) {
    const uint64_t at = offset + i;
    data[i] = (at >= offset && at < config_.size()) ? config_[static_cast<size_t>(at)] : 0;
  }
}

// --- Life cycle -----------------------------------------------------------------

bool VirtioBlk::activate(const memory::GuestMemory& mem, uint64_t negotiated_features,
                         std::vector<Queue*> queues, std::shared_ptr<Interrupt> irq) {
  if (active_) reset();
  if (queues.size() != num_queues_ || !irq) return false;
  for (size_t i = 0; i < queues.size(); ++i) {
    if (queues[i] == nullptr) return false;
    // A driver without VIRTIO_BLK_F_MQ uses queue 0 only; the others stay
    // disabled (and pop() nothing).
    if (queues[i]->ready() && !queues[i]->is_valid(mem)) {
      log::warn("virtio-blk " + path_ + ": the driver enabled an unusable request queue " +
                std::to_string(i));
      return false;
    }
  }
  mem_ = &mem;
  queues_ = std::move(queues);
  for (Queue* q : queues_) q->set_features(negotiated_features);
  irq_ = std::move(irq);
  negotiated_ = negotiated_features;
  used_mask_ = 0;
  broken_logged_ = 0;
  pump_posted_ = false;
  next_first_ = 0;
  self_ = std::make_shared<VirtioBlk*>(this);
  active_ = true;
  const int efd = backend_->event_fd();
  if (loop_ != nullptr && efd >= 0) {
    loop_->add(efd, EPOLLIN, [this](uint32_t) { process_completions(); });
    fd_registered_ = true;
  }
  return true;
}

void VirtioBlk::reset() {
  if (fd_registered_ && loop_ != nullptr) loop_->remove(backend_->event_fd());
  fd_registered_ = false;
  active_ = false;  // completions delivered by drain() are dropped
  self_.reset();
  backend_->drain();
  free_pending_.clear();
  for (uint32_t i = static_cast<uint32_t>(pending_.size()); i-- > 0;) free_pending_.push_back(i);
  mem_ = nullptr;
  queues_.clear();
  irq_.reset();
  negotiated_ = 0;
}

void VirtioBlk::process_queue(uint16_t index) {
  if (index >= num_queues_ || !active_) return;
  pump(queue_bit(index));
}

void VirtioBlk::process_completions() {
  backend_->reap();
  if (!active_) return;
  // Freed back-end slots may be what any queue was waiting for.
  pump(all_queues());
}

void VirtioBlk::pump(uint64_t which) {
  // A budget per queue and call keeps one busy disk from holding the event
  // loop; the rest is taken by a posted continuation (or by the caller,
  // without a loop). The first queue served rotates, so that when the
  // back-end fills up no queue is always last.
  uint64_t more = 0;
  uint32_t budget[kMaxQueues];
  for (uint16_t i = 0; i < num_queues_; ++i) {
    budget[i] = queues_[i]->size() != 0 ? queues_[i]->size() : kQueueSize;
  }
  const uint16_t first = next_first_;
  next_first_ = static_cast<uint16_t>((next_first_ + 1) % num_queues_);
  for (;;) {
    bool full = false;
    for (uint16_t n = 0; n < num_queues_ && !full; ++n) {
      const uint16_t qi = static_cast<uint16_t>((first + n) % num_queues_);
      if (!(which & queue_bit(qi))) continue;
      Queue& q = *queues_[qi];
      for (;;) {
        if (backend_->in_flight() >= backend_->max_in_flight()) {
          full = true;
          break;
        }
        if (budget[qi] == 0) {
          more |= queue_bit(qi);
          break;
        }
        auto chain = q.pop(*mem_);
        if (!chain) break;
        --budget[qi];
        handle(qi, *chain);
      }
    }
    backend_->flush_submissions();
    // Requests the kernel completed while they were submitted (page-cache
    // hits) are done now: complete them in this pass, and if they free
    // back-end slots the queues were waiting for, go on taking requests.
    const uint32_t ready = backend_->poll_ready();
    if (!(full && ready > 0)) break;
  }
  for (uint16_t qi = 0; qi < num_queues_; ++qi) {
    if (queues_[qi]->broken() && !(broken_logged_ & queue_bit(qi))) {
      broken_logged_ |= queue_bit(qi);
      log::error("virtio-blk " + path_ + ": request queue " + std::to_string(qi) +
                 " broken: " + queues_[qi]->error_message());
      irq_->notify_needs_reset(queues_[qi]->error_message());
    }
  }
  signal_used();
  if (more != 0 && loop_ != nullptr && !pump_posted_) {
    pump_posted_ = true;
    std::weak_ptr<VirtioBlk*> weak = self_;
    loop_->post([weak, more] {
      if (auto self = weak.lock()) {
        (*self)->pump_posted_ = false;
        if ((*self)->active_) (*self)->pump(more);
      }
    });
  }
}

// --- Requests ----------------------------------------------------------------------

void VirtioBlk::handle(uint16_t q, const DescriptorChain& chain) {
  const uint16_t head = chain.head();
  if (!chain.ok()) {
    ++stats_.bad_chains;
    log_guest_error(std::string("malformed descriptor chain: ") + chain.error_message());
    queues_[q]->add_used(*mem_, head, 0);
    used_mask_ |= queue_bit(q);
    ++stats_.completed;
    return;
  }
  const auto writable = chain.writable();
  if (writable.empty()) {
    // Nowhere to put a status: hand the descriptors back with nothing written.
    ++stats_.bad_chains;
    log_guest_error("request without a writable status byte");
    queues_[q]->add_used(*mem_, head, 0);
    used_mask_ |= queue_bit(q);
    ++stats_.completed;
    return;
  }
  const Buffer& last = writable.back();
  uint8_t* status = last.host.data() + last.len - 1;

  if (chain.readable_len() < kVirtioBlkHeaderSize) {
    log_guest_error("request header missing or not device-readable");
    return complete(q, head, status, kVirtioBlkSIoErr, 1);
  }
  uint8_t hdr[kVirtioBlkHeaderSize];
  const Buffer& first = chain.readable().front();
  if (first.len >= sizeof hdr) {
    std::memcpy(hdr, first.host.data(), sizeof hdr);  // the usual layout: a buffer of its own
  } else if (chain.read(*mem_, 0, hdr) != sizeof hdr) {
    return complete(q, head, status, kVirtioBlkSIoErr, 1);
  }
  uint32_t type;
  uint64_t sector;
  std::memcpy(&type, hdr, sizeof type);
  std::memcpy(&sector, hdr + 8, sizeof sector);

  const uint32_t readable_extra = chain.readable_len() - kVirtioBlkHeaderSize;
  const uint32_t writable_data = chain.writable_len() - 1;  // all but the status byte

  switch (type) {
    case kVirtioBlkTIn:
    case kVirtioBlkTOut: {
      const bool in = type == kVirtioBlkTIn;
      // Data goes one way only: device-writable for IN, readable for OUT.
      if ((in && readable_extra != 0) || (!in && writable_data != 0)) {
        log_guest_error("data buffers in the wrong direction");
        return complete(q, head, status, kVirtioBlkSIoErr, 1);
      }
      if (!in && readonly_) return complete(q, head, status, kVirtioBlkSIoErr, 1);
      const uint64_t len = in ? writable_data : readable_extra;
      if (len % kSectorSize != 0 || len > kMaxRequestBytes) {
        log_guest_error("data length " + std::to_string(len) + " not a multiple of 512 or too big");
        return complete(q, head, status, kVirtioBlkSIoErr, 1);
      }
      if (!range_ok(sector, len / kSectorSize, capacity_)) {
        log_guest_error("sector " + std::to_string(sector) + " + " + std::to_string(len / 512) +
                        " beyond capacity " + std::to_string(capacity_));
        return complete(q, head, status, kVirtioBlkSIoErr, 1);
      }
      const uint32_t ok_len = in ? writable_data + 1 : 1;
      if (len == 0) return complete(q, head, status, kVirtioBlkSOk, ok_len);
      const bool built = in ? build_iov(writable, 0, len, iov_)
                            : build_iov(chain.readable(), kVirtioBlkHeaderSize, len, iov_);
      if (!built) {
        log_guest_error("request has more than 1024 data segments");
        return complete(q, head, status, kVirtioBlkSIoErr, 1);
      }
      BlockIo io;
      io.op = in ? BlockIo::Op::kRead : BlockIo::Op::kWrite;
      io.offset = sector * kSectorSize;  // < 2^64: sector + count <= capacity
      io.iov = iov_;
      return submit_io(io, Pending{head, q, status, ok_len});
    }

    case kVirtioBlkTFlush: {
      if (readable_extra != 0 || writable_data != 0) {
        log_guest_error("flush request with data");
        return complete(q, head, status, kVirtioBlkSIoErr, 1);
      }
      if (readonly_) return complete(q, head, status, kVirtioBlkSOk, 1);  // nothing to sync
      BlockIo io;
      io.op = BlockIo::Op::kFlush;
      return submit_io(io, Pending{head, q, status, 1});
    }

    case kVirtioBlkTGetId: {
      if (readable_extra != 0) return complete(q, head, status, kVirtioBlkSIoErr, 1);
      // NUL-padded to 20 bytes; a shorter buffer gets a prefix.
      uint8_t id[kVirtioBlkIdBytes] = {};
      std::memcpy(id, serial_.data(), std::min(serial_.size(), sizeof id));
      const size_t n = std::min<size_t>(writable_data, sizeof id);
      const size_t done = chain.write(*mem_, 0, std::span<const uint8_t>(id, n));
      return complete(q, head, status, kVirtioBlkSOk, static_cast<uint32_t>(done) + 1);
    }

    case kVirtioBlkTDiscard:
    case kVirtioBlkTWriteZeroes: {
      const bool discard = type == kVirtioBlkTDiscard;
      const unsigned feature = discard ? kVirtioBlkFDiscard : kVirtioBlkFWriteZeroes;
      if (!(negotiated_ & feature_bit(feature)) || !(features_ & feature_bit(feature))) {
        if (readonly_) return complete(q, head, status, kVirtioBlkSIoErr, 1);
        ++stats_.unsupported;
        return complete(q, head, status, kVirtioBlkSUnsupp, 1);
      }
      if (writable_data != 0 || readable_extra == 0 ||
          readable_extra % kVirtioBlkSegmentSize != 0) {
        log_guest_error("discard/write-zeroes request with a malformed segment list");
        return complete(q, head, status, kVirtioBlkSIoErr, 1);
      }
      if (readable_extra / kVirtioBlkSegmentSize > 1) {  // max_*_seg is 1
        log_guest_error("discard/write-zeroes request with more than one segment");
        return complete(q, head, status, kVirtioBlkSIoErr, 1);
      }
      uint8_t seg[kVirtioBlkSegmentSize];
      if (chain.read(*mem_, kVirtioBlkHeaderSize, seg) != sizeof seg) {
        return complete(q, head, status, kVirtioBlkSIoErr, 1);
      }
      uint64_t seg_sector;
      uint32_t num_sectors, seg_flags;
      std::memcpy(&seg_sector, seg, 8);
      std::memcpy(&num_sectors, seg + 8, 4);
      std::memcpy(&seg_flags, seg + 12, 4);
      // Unknown flags, and unmap on a discard, are not supported (5.2.6.2).
      if ((seg_flags & ~kVirtioBlkWriteZeroesFlagUnmap) != 0 ||
          (discard && (seg_flags & kVirtioBlkWriteZeroesFlagUnmap))) {
        ++stats_.unsupported;
        return complete(q, head, status, kVirtioBlkSUnsupp, 1);
      }
      const uint32_t max = discard ? kMaxDiscardSectors : kMaxWriteZeroesSectors;
      if (num_sectors > max || !range_ok(seg_sector, num_sectors, capacity_)) {
        log_guest_error("discard/write-zeroes range out of bounds");
        return complete(q, head, status, kVirtioBlkSIoErr, 1);
      }
      if (num_sectors == 0) return complete(q, head, status, kVirtioBlkSOk, 1);
      BlockIo io;
      io.op = discard ? BlockIo::Op::kDiscard : BlockIo::Op::kWriteZeroes;
      io.offset = seg_sector * kSectorSize;
      io.length = uint64_t{num_sectors} * kSectorSize;
      io.unmap = (seg_flags & kVirtioBlkWriteZeroesFlagUnmap) != 0;
      return submit_io(io, Pending{head, q, status, 1});
    }

    default:
      ++stats_.unsupported;
      return complete(q, head, status, kVirtioBlkSUnsupp, 1);
  }
}

void VirtioBlk::submit_io(const BlockIo& io, const Pending& p) {
  if (free_pending_.empty()) {  // pump() checks first; never expected
    return complete(p.queue, p.head, p.status, kVirtioBlkSIoErr, 1);
  }
  const uint32_t slot = free_pending_.back();
  free_pending_.pop_back();
  pending_[slot] = p;
  backend_->submit(io, slot);
}

void VirtioBlk::complete(uint16_t q, uint16_t head, uint8_t* status, uint8_t value,
                         uint32_t len) {
  *status = value;
  if (value == kVirtioBlkSIoErr) ++stats_.io_errors;
  queues_[q]->add_used(*mem_, head, len);
  used_mask_ |= queue_bit(q);
  ++stats_.completed;
}

void VirtioBlk::on_backend_done(uint64_t cookie, int result) {
  if (cookie >= pending_.size()) return;
  const Pending p = pending_[cookie];
  free_pending_.push_back(static_cast<uint32_t>(cookie));
  if (!active_) return;  // reset() is draining: the driver no longer wants it
  if (result < 0) {
    log_io_error(-result);
    return complete(p.queue, p.head, p.status, kVirtioBlkSIoErr, 1);
  }
  complete(p.queue, p.head, p.status, kVirtioBlkSOk, p.ok_len);
}

void VirtioBlk::signal_used() {
  while (used_mask_ != 0) {
    const auto qi = static_cast<uint16_t>(std::countr_zero(used_mask_));
    used_mask_ &= used_mask_ - 1;
    if (queues_[qi]->needs_notification(*mem_)) irq_->notify_queue(qi);
  }
}

void VirtioBlk::log_guest_error(const std::string& what) {
  if (guest_errors_logged_ >= kMaxLoggedErrors) return;
  ++guest_errors_logged_;
  log::debug("virtio-blk " + path_ + ": " + what +
             (guest_errors_logged_ == kMaxLoggedErrors ? " (further ones not logged)" : ""));
}

void VirtioBlk::log_io_error(int err) {
  if (io_errors_logged_ >= kMaxLoggedErrors) return;
  ++io_errors_logged_;
  log::warn(errno_message("virtio-blk " + path_ + ": I/O error", err) +
            (io_errors_logged_ == kMaxLoggedErrors ? " (further ones not logged)" : ""));
}

}  // namespace rz::virtio
