// The synchronous block back-end, the factory, and helpers shared with the
// io_uring back-end (blk_uring.cpp).
#include "virtio/blk_backend.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "util/error.h"

namespace rz::virtio {

const char* to_string(BlockEngine e) {
  switch (e) {
    case BlockEngine::kSync: return "sync";
    case BlockEngine::kIoUring: return "io_uring";
  }
  return "?";
}

namespace blk_detail {

ZeroStep first_zero_step(const BlockIo& io, const FallocateSupport& s) {
  if (io.op == BlockIo::Op::kDiscard) {
    // Discard is a hint: where holes cannot be punched it does nothing.
    return s.punch_hole ? ZeroStep::kPunch : ZeroStep::kDone;
  }
  if (io.unmap && s.punch_hole) return ZeroStep::kPunch;
  if (s.zero_range) return ZeroStep::kZeroRange;
  return ZeroStep::kWrite;
}

std::optional<ZeroStep> next_zero_step(const BlockIo& io, ZeroStep failed, int err,
                                       FallocateSupport& s) {
  // EOPNOTSUPP: the file system lacks the mode. EINVAL: some lack even the
  // mode bits' combination (the range itself is sector-aligned and valid).
  const bool unsupported = err == EOPNOTSUPP || err == EINVAL;
  if (!unsupported) return std::nullopt;
  switch (failed) {
    case ZeroStep::kPunch:
      s.punch_hole = false;
      break;
    case ZeroStep::kZeroRange:
      s.zero_range = false;
      break;
    case ZeroStep::kWrite:
    case ZeroStep::kDone:
      return std::nullopt;
  }
  return first_zero_step(io, s);
}

int fallocate_mode(ZeroStep step) {
  switch (step) {
    case ZeroStep::kPunch: return FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
    case ZeroStep::kZeroRange: return FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
    default: return 0;
  }
}

void ZeroBuffer::iovecs(uint64_t length, std::vector<iovec>& out) {
  if (!buf_) buf_ = std::make_unique<uint8_t[]>(kChunk);  // value-initialized: zeroes
  out.clear();
  while (length > 0) {
    const size_t n = length < kChunk ? static_cast<size_t>(length) : kChunk;
    out.push_back(iovec{buf_.get(), n});
    length -= n;
  }
}

void advance_iovecs(std::vector<iovec>& iov, size_t n) {
  size_t drop = 0;
  while (drop < iov.size() && n >= iov[drop].iov_len) {
    n -= iov[drop].iov_len;
    ++drop;
  }
  iov.erase(iov.begin(), iov.begin() + static_cast<std::ptrdiff_t>(drop));
  if (!iov.empty() && n > 0) {
    iov[0].iov_base = static_cast<uint8_t*>(iov[0].iov_base) + n;
    iov[0].iov_len -= n;
  }
}

uint64_t iov_bytes(std::span<const iovec> iov) {
  uint64_t total = 0;
  for (const iovec& v : iov) total += v.iov_len;
  return total;
}

}  // namespace blk_detail

namespace {

using blk_detail::ZeroStep;

// preadv/pwritev straight from the caller's iovecs on the calling thread.
class SyncBlockBackend final : public BlockBackend {
 public:
  SyncBlockBackend(int fd, BlockCompletion completion)
      : fd_(fd), completion_(std::move(completion)) {}

  BlockEngine engine() const override { return BlockEngine::kSync; }
  uint32_t max_in_flight() const override { return 1; }
  uint32_t in_flight() const override { return 0; }

  void submit(const BlockIo& io, uint64_t cookie) override {
    int result = 0;
    switch (io.op) {
      case BlockIo::Op::kRead: result = transfer(false, io.iov, io.offset); break;
      case BlockIo::Op::kWrite: result = transfer(true, io.iov, io.offset); break;
      case BlockIo::Op::kFlush:
        result = ::fdatasync(fd_) == 0 ? 0 : -errno;
        break;
      case BlockIo::Op::kDiscard:
      case BlockIo::Op::kWriteZeroes: result = zero(io); break;
    }
    completion_(cookie, result);
  }

 private:
  // Moves every byte of `iov` or fails; resumes after short transfers.
  int transfer(bool write, std::span<const iovec> iov, uint64_t offset) {
    if (iov.size() > kMaxIov) return -EINVAL;
    const uint64_t total = blk_detail::iov_bytes(iov);
    const iovec* v = iov.data();
    int count = static_cast<int>(iov.size());
    bool copied = false;
    uint64_t done = 0;
    while (done < total) {
      const off_t pos = static_cast<off_t>(offset + done);
      // One buffer (the common case for 4 KiB requests): pread/pwrite spare
      // the kernel copying in an iovec array.
      const ssize_t n =
          count == 1 ? (write ? ::pwrite(fd_, v->iov_base, v->iov_len, pos)
                              : ::pread(fd_, v->iov_base, v->iov_len, pos))
                     : (write ? ::pwritev(fd_, v, count, pos) : ::preadv(fd_, v, count, pos));
      if (n < 0) {
        if (errno == EINTR) continue;
        return -errno;
      }
      if (n == 0) return -EIO;  // the file ended (it shrank under us)
      done += static_cast<uint64_t>(n);
      if (done >= total) break;
      if (!copied) {
        scratch_.assign(v, v + count);
        copied = true;
      }
      blk_detail::advance_iovecs(scratch_, static_cast<size_t>(n));
      v = scratch_.data();
      count = static_cast<int>(scratch_.size());
    }
    return 0;
  }

  int zero(const BlockIo& io) {
    ZeroStep step = blk_detail::first_zero_step(io, support_);
    // At most one try per step kind: each failure disables a mode.
    for (int attempt = 0; attempt < 4; ++attempt) {
      int err = 0;
      switch (step) {
        case ZeroStep::kDone: return 0;
        case ZeroStep::kPunch:
        case ZeroStep::kZeroRange:
          if (::fallocate(fd_, blk_detail::fallocate_mode(step), static_cast<off_t>(io.offset),
                          static_cast<off_t>(io.length)) == 0) {
            return 0;
          }
          err = errno;
          break;
        case ZeroStep::kWrite: {
          if (io.length > kMaxWriteZeroesBytes) return -EINVAL;
          std::vector<iovec> iov;
          zeros_.iovecs(io.length, iov);
          return transfer(true, iov, io.offset);
        }
      }
      auto next = blk_detail::next_zero_step(io, step, err, support_);
      if (!next) return -err;
      step = *next;
    }
    return -EIO;
  }

  int fd_;
  BlockCompletion completion_;
  std::vector<iovec> scratch_;
  blk_detail::FallocateSupport support_;
  blk_detail::ZeroBuffer zeros_;
};

}  // namespace

std::unique_ptr<BlockBackend> make_block_backend(BlockEngine engine, int fd,
                                                 BlockCompletion completion,
                                                 const std::string& what) {
  switch (engine) {
    case BlockEngine::kSync: return std::make_unique<SyncBlockBackend>(fd, std::move(completion));
    case BlockEngine::kIoUring:
      return blk_detail::make_uring_backend(fd, std::move(completion), what);
  }
  throw Error(what + ": unknown block engine");
}

}  // namespace rz::virtio
