#include "io/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/tensor.h"

namespace dg {

namespace {

[[noreturn]] void fail(const char* what, const std::string& path, int err) {
  throw Error("ERR_FILE_OPEN", std::string("cannot ") + what + " " + path + ": " + std::strerror(err));
}

// Reads the whole file into an anonymous mapping rounded up to 2 MiB and
// advised for huge pages (a no-op where THP is disabled).
const uint8_t* read_into_memory(int fd, const std::string& path, uint64_t size, uint64_t* mapped) {
  const uint64_t huge = uint64_t(2) << 20;
  *mapped = (size + huge - 1) / huge * huge;
  void* p = mmap(nullptr, *mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) fail("allocate memory for", path, errno);
#ifdef MADV_HUGEPAGE
  madvise(p, *mapped, MADV_HUGEPAGE);
#endif
  uint8_t* dst = static_cast<uint8_t*>(p);
  for (uint64_t done = 0; done < size;) {
    const ssize_t n = pread(fd, dst + done, size_t(std::min<uint64_t>(size - done, uint64_t(1) << 30)), off_t(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int e = n < 0 ? errno : EIO;  // 0: the file shrank while we read it
      munmap(p, *mapped);
      fail("read", path, e);
    }
    done += uint64_t(n);
  }
  mprotect(p, *mapped, PROT_READ);  // weights are immutable from here on
  return dst;
}

}  // namespace

std::shared_ptr<MappedFile> MappedFile::open(const std::string& path, Mode mode) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("open", path, errno);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    fail("stat", path, e);
  }
  const uint64_t size = uint64_t(st.st_size);
  uint64_t mapped = size;
  const uint8_t* data = nullptr;
  try {
    if (size > 0 && mode == Mode::Read) {
      data = read_into_memory(fd, path, size, &mapped);
    } else if (size > 0) {
      void* p = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) fail("map", path, errno);
      data = static_cast<const uint8_t*>(p);
    }
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);  // a mapping keeps the file alive
  return std::shared_ptr<MappedFile>(
      new MappedFile(path, data, size, mapped, mode == Mode::Map && size > 0, uint64_t(st.st_dev), uint64_t(st.st_ino)));
}

MappedFile::~MappedFile() {
  if (data_) munmap(const_cast<uint8_t*>(data_), mapped_);
}

bool MappedFile::changed() const {
  if (!is_mapping_) return false;
  struct stat st;
  if (::stat(path_.c_str(), &st) != 0) return false;  // removed: the mapping keeps the data
  return uint64_t(st.st_dev) == dev_ && uint64_t(st.st_ino) == ino_ && uint64_t(st.st_size) != size_;
}

const uint8_t* MappedFile::slice(uint64_t offset, uint64_t length, const std::string& what) const {
  if (offset > size_ || length > size_ - offset) {
    throw Error("ERR_SAFETENSORS", what + ": bytes [" + std::to_string(offset) + ", " +
                                       std::to_string(offset + length) + ") lie outside " + path_ +
                                       " (" + std::to_string(size_) + " bytes)");
  }
  return data_ + offset;
}

}  // namespace dg
