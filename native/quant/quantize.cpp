#include "quant/quantize.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include "quant/formats.h"
#include "quant/layout.h"

namespace dg {

HugeBuffer::HugeBuffer(uint64_t bytes) : size_(bytes) {
  const uint64_t huge = uint64_t(2) << 20;
  mapped_ = std::max<uint64_t>(huge, (bytes + huge - 1) / huge * huge);
  void* p = mmap(nullptr, mapped_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw Error("ERR_OUT_OF_MEMORY", "cannot allocate " + std::to_string(bytes) + " bytes for quantized weights: " + std::strerror(errno));
#ifdef MADV_HUGEPAGE
  madvise(p, mapped_, MADV_HUGEPAGE);
#endif
  data_ = static_cast<uint8_t*>(p);
}

HugeBuffer::~HugeBuffer() {
  if (data_) munmap(data_, mapped_);
}

namespace {

// MADV_DONTNEED on the whole pages inside [p, p + n).
void release_pages(const void* p, uint64_t n) {
  const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  const uintptr_t lo = (reinterpret_cast<uintptr_t>(p) + page - 1) / page * page;
  const uintptr_t hi = (reinterpret_cast<uintptr_t>(p) + n) / page * page;
  if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
}

}  // namespace

DType quant_format_for(DType requested, DType stored, int64_t cols) {
  if (dtype_is_quantized(stored)) return stored;
  if (cols % dtype_block_elems(requested) == 0) return requested;
  if (requested == DType::Q4_K && cols % 32 == 0) return DType::Q4_0;
  return stored;
}

void quantize_matrix(const Matrix& src, DType fmt, uint8_t* dst, ThreadPool& pool,
                     const std::function<void(int64_t)>& progress) {
  if (dtype_is_quantized(src.dtype)) throw Error("ERR_ARGUMENT", "quantize_matrix: the source is already quantized");
  const int64_t K = src.cols;
  // Chunks of ~4 MiB of source so progress moves and threads share the work.
  const int64_t chunk = std::max<int64_t>(1, (int64_t(4) << 20) / std::max<int64_t>(1, K * int64_t(dtype_size(src.dtype))));
  for (int64_t c0 = 0; c0 < src.rows; c0 += chunk) {
    const int64_t c1 = std::min(src.rows, c0 + chunk);
    pool.parallel_for(c1 - c0, [&](int64_t i0, int64_t i1) {
      std::vector<float> row(static_cast<size_t>(K));
      std::vector<uint8_t> blocks(static_cast<size_t>(dtype_row_bytes(fmt, K)));
      for (int64_t r = c0 + i0; r < c0 + i1; ++r) {
        const char* s = src.row_ptr(r);
        switch (src.dtype) {
          case DType::F32: std::memcpy(row.data(), s, size_t(K) * 4); break;
          case DType::BF16:
            for (int64_t k = 0; k < K; ++k) {
              uint16_t h;
              std::memcpy(&h, s + 2 * k, 2);
              row[size_t(k)] = bf16_to_f32(h);
            }
            break;
          default:
            for (int64_t k = 0; k < K; ++k) row[size_t(k)] = load_as_f32(s, src.dtype, k);
        }
        quantize_row(fmt, row.data(), blocks.data(), K);
        scatter_row(blocks.data(), fmt, dst, src.rows, K, r);
      }
    }, std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(K, 1)));
    if (progress) progress(c1);
  }
}

std::vector<QuantTarget> quant_targets(ModelWeights& w, DType fmt) {
  std::vector<QuantTarget> out;
  auto add = [&](Matrix& m) { out.push_back({&m, quant_format_for(fmt, m.dtype, m.cols)}); };
  for (LayerWeights& L : w.layers)
    for (Linear* l : {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down}) add(l->w);
  add(w.lm_head);
  return out;
}

void quantize_weights(ModelWeights& w, DType fmt, ThreadPool& pool,
                      const std::function<void(uint64_t, uint64_t)>& progress) {
  if (!dtype_is_quantized(fmt)) throw Error("ERR_ARGUMENT", "quantize_weights: not a quantized format");
  std::vector<QuantTarget> targets = quant_targets(w, fmt);
  uint64_t total_bytes = 0, total = 0;
  for (const QuantTarget& t : targets) {
    if (!dtype_is_quantized(t.format)) continue;
    total_bytes += uint64_t((t.matrix->rows * dtype_row_bytes(t.format, t.matrix->cols) + 63) / 64 * 64);
    total += uint64_t(t.matrix->rows * t.matrix->cols);
  }
  if (total == 0) {
    if (progress) progress(0, 0);  // callers may wait for done == total
    return;
  }
  auto buf = std::make_shared<HugeBuffer>(total_bytes);
  uint64_t offset = 0, done = 0;
  for (const QuantTarget& t : targets) {
    if (!dtype_is_quantized(t.format)) continue;
    Matrix& m = *t.matrix;
    uint8_t* dst = buf->data() + offset;
    quantize_matrix(m, t.format, dst, pool, [&](int64_t rows_done) {
      if (progress) progress(done + uint64_t(rows_done * m.cols), total);
    });
    done += uint64_t(m.rows * m.cols);
    offset += uint64_t((m.rows * dtype_row_bytes(t.format, m.cols) + 63) / 64 * 64);
    // Nothing reads the source again (the embedding, which a tied LM head
    // shares, excepted): give its whole pages back, so resident memory ends at
    // the quantized size rather than source + quantized. For a file mapping
    // the pages stay in the page cache; for a checkpoint read into memory (a
    // private anonymous copy) they are freed.
    if (m.data != w.embed.data) release_pages(m.data, uint64_t(m.rows * dtype_row_bytes(m.dtype, m.cols)));
    m = Matrix{dst, t.format, m.rows, m.cols};
  }
  w.owned.push_back(std::move(buf));
}

}  // namespace dg
