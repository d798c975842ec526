#include "quant/cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstring>

#include "quant/quantize.h"

namespace dg {
namespace {

constexpr char kMagic[8] = {'D', 'G', 'Q', 'U', 'A', 'N', 'T', '1'};
// 2: rows in groups of 16 (quant/layout.h); version 1 files are rebuilt.
constexpr uint32_t kVersion = 2;

struct Header {
  char magic[8];
  uint32_t version;
  uint32_t format;
  uint64_t fingerprint;
  uint64_t n;
};
struct Record {
  uint32_t dtype;
  uint32_t zero;
  uint64_t rows, cols, offset, bytes;
};
static_assert(sizeof(Header) == 32 && sizeof(Record) == 40, "packed cache records");

struct Fnv {
  uint64_t h = 1469598103934665603ull;
  void add(const void* p, size_t n) {
    const uint8_t* b = static_cast<const uint8_t*>(p);
    for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  }
  template <class T>
  void value(T v) { add(&v, sizeof v); }
};

[[noreturn]] void fail(const std::string& what, const std::string& path, int err) {
  throw Error("ERR_QUANT_CACHE", "cannot " + what + " quantized-weights cache " + path + ": " + std::strerror(err));
}

uint64_t aligned(uint64_t n) { return (n + 63) / 64 * 64; }

// The records a cache of w's targets has, given each target's format.
std::vector<Record> plan(const std::vector<QuantTarget>& targets) {
  std::vector<Record> out;
  uint64_t offset = aligned(sizeof(Header) + targets.size() * sizeof(Record));
  for (const QuantTarget& t : targets) {
    Record r{uint32_t(t.format), 0, uint64_t(t.matrix->rows), uint64_t(t.matrix->cols), 0, 0};
    if (dtype_is_quantized(t.format)) {
      r.offset = offset;
      r.bytes = uint64_t(t.matrix->rows * dtype_row_bytes(t.format, t.matrix->cols));
      offset = aligned(offset + r.bytes);
    }
    out.push_back(r);
  }
  return out;
}

}  // namespace

uint64_t quant_fingerprint(const ModelConfig& c, const std::vector<std::string>& files, DType fmt) {
  Fnv f;
  for (int64_t v : {c.hidden, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.intermediate, c.vocab}) f.value(v);
  f.value(int(c.tie_embeddings));
  f.value(int(fmt));
  std::vector<uint8_t> head(size_t(1) << 20);
  for (const std::string& path : files) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail("fingerprint the source of a", path, errno);
    struct stat st;
    if (fstat(fd, &st) != 0) {
      const int e = errno;
      ::close(fd);
      fail("fingerprint the source of a", path, e);
    }
    f.value(uint64_t(st.st_size));
    f.value(int64_t(st.st_mtim.tv_sec));
    f.value(int64_t(st.st_mtim.tv_nsec));
    const ssize_t n = pread(fd, head.data(), head.size(), 0);
    ::close(fd);
    if (n > 0) f.add(head.data(), size_t(n));
  }
  return f.h;
}

bool load_quant_cache(const std::string& path, ModelWeights& w, DType fmt, uint64_t fingerprint, MappedFile::Mode mode) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return false;
  std::vector<QuantTarget> targets = quant_targets(w, fmt);
  const std::vector<Record> want = plan(targets);
  const uint64_t table = sizeof(Header) + want.size() * sizeof(Record);
  uint64_t end = aligned(table);  // the last quantized matrix ends the file
  for (const Record& r : want)
    if (r.bytes) end = r.offset + r.bytes;
  if (uint64_t(st.st_size) != end) return false;
  std::shared_ptr<MappedFile> file = MappedFile::open(path, mode);
  const uint8_t* base = file->slice(0, table, path);
  Header h;
  std::memcpy(&h, base, sizeof h);
  if (std::memcmp(h.magic, kMagic, 8) != 0 || h.version != kVersion || h.format != uint32_t(fmt) ||
      h.fingerprint != fingerprint || h.n != want.size())
    return false;
  for (size_t i = 0; i < want.size(); ++i) {
    Record r;
    std::memcpy(&r, base + sizeof(Header) + i * sizeof(Record), sizeof r);
    if (std::memcmp(&r, &want[i], sizeof r) != 0) return false;
  }
  for (size_t i = 0; i < targets.size(); ++i) {
    if (!want[i].bytes) continue;
    Matrix& m = *targets[i].matrix;
    m = Matrix{file->slice(want[i].offset, want[i].bytes, path), targets[i].format, m.rows, m.cols};
  }
  w.owned.push_back(std::move(file));
  return true;
}

void write_quant_cache(const std::string& path, ModelWeights& w, DType fmt, uint64_t fingerprint) {
  std::vector<QuantTarget> targets = quant_targets(w, fmt);  // already quantized: formats are the matrices' own
  const std::vector<Record> recs = plan(targets);
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("create", tmp, errno);
  auto put = [&](const void* p, uint64_t n, uint64_t at) {
    const uint8_t* b = static_cast<const uint8_t*>(p);
    for (uint64_t done = 0; done < n;) {
      const ssize_t k = pwrite(fd, b + done, size_t(std::min<uint64_t>(n - done, uint64_t(1) << 30)), off_t(at + done));
      if (k < 0 && errno == EINTR) continue;
      if (k <= 0) {
        const int e = k < 0 ? errno : EIO;
        ::close(fd);
        ::unlink(tmp.c_str());
        fail("write", tmp, e);
      }
      done += uint64_t(k);
    }
  };
  Header h;
  std::memcpy(h.magic, kMagic, 8);
  h.version = kVersion;
  h.format = uint32_t(fmt);
  h.fingerprint = fingerprint;
  h.n = recs.size();
  put(&h, sizeof h, 0);
  for (size_t i = 0; i < recs.size(); ++i) put(&recs[i], sizeof(Record), sizeof(Header) + i * sizeof(Record));
  uint64_t end = aligned(sizeof(Header) + recs.size() * sizeof(Record));
  for (size_t i = 0; i < recs.size(); ++i) {
    if (!recs[i].bytes) continue;
    put(targets[i].matrix->data, recs[i].bytes, recs[i].offset);
    end = recs[i].offset + recs[i].bytes;
  }
  if (ftruncate(fd, off_t(end)) != 0 || fsync(fd) != 0) {
    const int e = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    fail("write", tmp, e);
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    fail("rename into place", path, e);
  }
}

}  // namespace dg
