// The io_uring block back-end (engine=io_uring): requests go to an io_uring
// of kRingEntries submission entries; completions are signalled on an
// eventfd registered with the ring, and reap() delivers them.
//
// Every request in flight owns a slot (its iovec array, its progress), so at
// most kRingEntries requests are in flight and the completion queue (twice
// the submission queue) cannot overflow. A short read or write is resumed
// from where it stopped; a discard or write-zeroes whose fallocate mode the
// file system lacks moves on to the next way of zeroing (blk_backend.h).
#include <liburing.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <utility>

#include "util/error.h"
#include "util/fd.h"
#include "util/log.h"
#include "virtio/blk_backend.h"

namespace rz::virtio::blk_detail {

namespace {

class UringBlockBackend final : public BlockBackend {
 public:
  static constexpr unsigned kRingEntries = 128;

  UringBlockBackend(int fd, BlockCompletion completion, const std::string& what)
      : fd_(fd), completion_(std::move(completion)) {
    const int r = io_uring_queue_init(kRingEntries, &ring_, 0);
    if (r < 0) {
      throw Error(errno_message(what + ": engine=io_uring: cannot set up an io_uring "
                                       "(io_uring_queue_init; use engine=sync if io_uring "
                                       "is disabled here)",
                                -r));
    }
    check_opcodes(what);
    // The image as fixed file 0: spares an fd table lookup per request.
    if (io_uring_register_files(&ring_, &fd_, 1) == 0) fixed_file_ = true;
    efd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!efd_.valid()) {
      const int e = errno;
      io_uring_queue_exit(&ring_);
      throw Error(errno_message(what + ": engine=io_uring: eventfd", e));
    }
    // Signalled for every completion. (Not the _async variant: it stays
    // silent for completions the kernel posts from task work, e.g. buffered
    // reads that waited for the disk, and those would never be reaped.)
    if (const int e = io_uring_register_eventfd(&ring_, efd_.get()); e < 0) {
      io_uring_queue_exit(&ring_);
      throw Error(errno_message(what + ": engine=io_uring: io_uring_register_eventfd", -e));
    }
    slots_.resize(kRingEntries);
    free_.reserve(kRingEntries);
    for (uint32_t i = kRingEntries; i-- > 0;) free_.push_back(i);
  }

  ~UringBlockBackend() override {
    // The kernel may still be writing into guest memory: wait for it.
    drain();
    // Dropped synchronously here: the ring itself is torn down in the
    // background, and a file reference it kept would hold the image's lock
    // past the device's life.
    if (fixed_file_) io_uring_unregister_files(&ring_);
    io_uring_queue_exit(&ring_);
  }

  // Fails clearly on a kernel whose io_uring lacks an operation we use.
  void check_opcodes(const std::string& what) {
    io_uring_probe* probe = io_uring_get_probe_ring(&ring_);
    if (probe == nullptr) return;  // cannot tell: errors will show per request
    const std::pair<int, const char*> ops[] = {
        {IORING_OP_READ, "READ"},   {IORING_OP_WRITE, "WRITE"},
        {IORING_OP_READV, "READV"}, {IORING_OP_WRITEV, "WRITEV"},
        {IORING_OP_FSYNC, "FSYNC"}, {IORING_OP_FALLOCATE, "FALLOCATE"}};
    for (const auto& [op, name] : ops) {
      if (!io_uring_opcode_supported(probe, op)) {
        io_uring_free_probe(probe);
        io_uring_queue_exit(&ring_);
        throw Error(what + ": engine=io_uring: this kernel's io_uring lacks IORING_OP_" + name +
                    " (use engine=sync)");
      }
    }
    io_uring_free_probe(probe);
  }

  BlockEngine engine() const override { return BlockEngine::kIoUring; }
  uint32_t max_in_flight() const override { return kRingEntries; }
  uint32_t in_flight() const override { return kRingEntries - static_cast<uint32_t>(free_.size()); }
  int event_fd() const override { return efd_.get(); }

  void submit(const BlockIo& io, uint64_t cookie) override {
    if (free_.empty()) {
      completion_(cookie, -EBUSY);  // caller broke the in_flight() contract
      return;
    }
    if ((io.op == BlockIo::Op::kRead || io.op == BlockIo::Op::kWrite) && io.iov.size() > kMaxIov) {
      completion_(cookie, -EINVAL);
      return;
    }
    const uint32_t index = free_.back();
    free_.pop_back();
    Slot& s = slots_[index];
    s.cookie = cookie;
    s.op = io.op;
    s.offset = io.offset;
    s.unmap = io.unmap;
    s.length = io.length;
    s.step = ZeroStep::kDone;
    s.iov.assign(io.iov.begin(), io.iov.end());
    s.remaining = iov_bytes(s.iov);
    if (io.op == BlockIo::Op::kDiscard || io.op == BlockIo::Op::kWriteZeroes) {
      s.step = first_zero_step(io, support_);
      if (s.step == ZeroStep::kDone) {
        finish(index, 0);
        return;
      }
      if (s.step == ZeroStep::kWrite && !prepare_zero_write(s)) {
        finish(index, -EINVAL);
        return;
      }
    }
    if ((io.op == BlockIo::Op::kRead || io.op == BlockIo::Op::kWrite) && s.remaining == 0) {
      finish(index, 0);
      return;
    }
    queue_sqe(index);
  }

  void flush_submissions() override {
    if (unsubmitted_ == 0) return;
    const int r = io_uring_submit(&ring_);
    if (r >= 0) {
      unsubmitted_ = 0;
      return;
    }
    // Submission itself failed (a transient -EAGAIN/-ENOMEM): the SQEs stay
    // in the ring and go with the next flush (the next kick or completion).
    log::warn(errno_message("virtio-blk: io_uring_submit (will retry)", -r));
  }

  void reap() override {
    eventfd_t ignored;
    (void)eventfd_read(efd_.get(), &ignored);  // clear before looking
    poll_ready();
  }

  uint32_t poll_ready() override {
    // Bounded by the completions present now: resubmissions made here are
    // only handed to the kernel after the loop.
    uint32_t n = 0;
    io_uring_cqe* cqe = nullptr;
    while (n < 2 * kRingEntries && io_uring_peek_cqe(&ring_, &cqe) == 0) {
      const uint64_t index = cqe->user_data;
      const int res = cqe->res;
      io_uring_cqe_seen(&ring_, cqe);
      ++n;
      if (index < slots_.size()) on_cqe(static_cast<uint32_t>(index), res);
    }
    flush_submissions();
    return n;
  }

  void drain() override {
    while (in_flight() > 0) {
      // Hands over anything queued (resubmissions included) and waits.
      const int r = io_uring_submit_and_wait(&ring_, 1);
      if (r == -EINTR || r == -EAGAIN || r == -EBUSY) continue;
      if (r < 0) {
        log::error(errno_message("io_uring_submit_and_wait while draining block requests", -r));
        return;
      }
      unsubmitted_ = 0;
      io_uring_cqe* cqe = nullptr;
      while (io_uring_peek_cqe(&ring_, &cqe) == 0) {
        const uint64_t index = cqe->user_data;
        const int res = cqe->res;
        io_uring_cqe_seen(&ring_, cqe);
        if (index < slots_.size()) on_cqe(static_cast<uint32_t>(index), res);
      }
    }
  }

 private:
  struct Slot {
    uint64_t cookie = 0;
    BlockIo::Op op = BlockIo::Op::kRead;
    uint64_t offset = 0;
    uint64_t length = 0;
    bool unmap = false;
    ZeroStep step = ZeroStep::kDone;
    std::vector<iovec> iov;  // what is left to transfer
    uint64_t remaining = 0;  // bytes in iov
  };

  // A read or write of data (the guest's, or zeroes) rather than a flush or
  // an fallocate.
  static bool is_transfer(const Slot& s) {
    return s.op == BlockIo::Op::kRead || s.op == BlockIo::Op::kWrite ||
           (s.op == BlockIo::Op::kWriteZeroes && s.step == ZeroStep::kWrite);
  }

  static BlockIo as_io(const Slot& s) {
    BlockIo io;
    io.op = s.op;
    io.offset = s.offset;
    io.length = s.length;
    io.unmap = s.unmap;
    return io;
  }

  bool prepare_zero_write(Slot& s) {
    if (s.length > kMaxWriteZeroesBytes) return false;
    zeros_.iovecs(s.length, s.iov);
    s.remaining = s.length;
    return true;
  }

  // Issues the slot's next operation.
  void queue_sqe(uint32_t index) {
    Slot& s = slots_[index];
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) {
      flush_submissions();
      sqe = io_uring_get_sqe(&ring_);
    }
    if (sqe == nullptr) {
      finish(index, -EBUSY);
      return;
    }
    if (is_transfer(s)) {
      const unsigned count = static_cast<unsigned>(s.iov.size());
      const bool read = s.op == BlockIo::Op::kRead;
      if (count == 1 && s.iov[0].iov_len <= UINT32_MAX) {  // READ/WRITE: no iovec array
        const iovec& v = s.iov[0];
        const auto len = static_cast<unsigned>(v.iov_len);
        if (read) io_uring_prep_read(sqe, fd_, v.iov_base, len, s.offset);
        else io_uring_prep_write(sqe, fd_, v.iov_base, len, s.offset);
      } else if (read) {
        io_uring_prep_readv(sqe, fd_, s.iov.data(), count, s.offset);
      } else {
        io_uring_prep_writev(sqe, fd_, s.iov.data(), count, s.offset);
      }
    } else if (s.op == BlockIo::Op::kFlush) {
      io_uring_prep_fsync(sqe, fd_, IORING_FSYNC_DATASYNC);
    } else {
      io_uring_prep_fallocate(sqe, fd_, fallocate_mode(s.step), static_cast<off_t>(s.offset),
                              static_cast<off_t>(s.length));
    }
    if (fixed_file_) {
      sqe->fd = 0;  // index into the registered files
      sqe->flags |= IOSQE_FIXED_FILE;
    }
    io_uring_sqe_set_data64(sqe, index);
    ++unsubmitted_;
  }

  void on_cqe(uint32_t index, int res) {
    Slot& s = slots_[index];
    if (is_transfer(s)) {
      if (res < 0) return finish(index, res);
      if (res == 0) return finish(index, -EIO);  // the file ended under us
      const uint64_t n = static_cast<uint64_t>(res);
      if (n >= s.remaining) return finish(index, 0);
      // Short transfer: resume after the bytes that moved.
      advance_iovecs(s.iov, static_cast<size_t>(n));
      s.remaining -= n;
      s.offset += n;
      return queue_sqe(index);
    }
    if (s.op == BlockIo::Op::kFlush || res >= 0) return finish(index, res < 0 ? res : 0);
    // A fallocate mode failed: try the next way of zeroing, if any.
    auto next = next_zero_step(as_io(s), s.step, -res, support_);
    if (!next) return finish(index, res);
    s.step = *next;
    if (s.step == ZeroStep::kDone) return finish(index, 0);
    if (s.step == ZeroStep::kWrite && !prepare_zero_write(s)) return finish(index, -EINVAL);
    queue_sqe(index);
  }

  void finish(uint32_t index, int result) {
    const uint64_t cookie = slots_[index].cookie;
    free_.push_back(index);
    completion_(cookie, result);
  }

  int fd_;
  BlockCompletion completion_;
  io_uring ring_{};
  UniqueFd efd_;
  std::vector<Slot> slots_;
  std::vector<uint32_t> free_;
  unsigned unsubmitted_ = 0;
  bool fixed_file_ = false;
  FallocateSupport support_;
  ZeroBuffer zeros_;
};

}  // namespace

std::unique_ptr<BlockBackend> make_uring_backend(int fd, BlockCompletion completion,
                                                 const std::string& what) {
  return std::make_unique<UringBlockBackend>(fd, std::move(completion), what);
}

}  // namespace rz::virtio::blk_detail
