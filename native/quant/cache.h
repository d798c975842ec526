// An optional on-disk cache of a model's quantized weights, written beside the
// checkpoint so the next load maps it instead of quantizing again.
//
// File layout (little-endian):
//   char     magic[8] = "DGQUANT1"
//   uint32   version = 2
//   uint32   format            requested DType (Q8_0 = 3, Q4_0 = 4, Q4_K = 5)
//   uint64   fingerprint       of the source (see quant_fingerprint)
//   uint64   n                 number of matrices, in quant_targets() order
//   n x { uint32 dtype; uint32 zero; uint64 rows; uint64 cols; uint64 offset; uint64 bytes }
//   the matrices' blocks (formats.h blocks in layout.h's row groups), each at its offset (a multiple of 64)
// The file ends exactly after the last matrix. A file that does not match the
// checkpoint in any of these (missing, another version or format, another
// fingerprint, other matrices or shapes, a wrong size) is ignored and rebuilt;
// it is written to a temporary name and renamed into place.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "io/mapped_file.h"
#include "model/config.h"
#include "model/weights.h"

namespace dg {

// FNV-1a over the config's dimensions, the format and, for every source file,
// its size, modification time (ns) and first MiB (the safetensors header).
uint64_t quant_fingerprint(const ModelConfig& cfg, const std::vector<std::string>& files, DType fmt);

// Binds the quantized targets of w (unquantized, as load_weights made it) to
// the cache at path. Returns false, changing nothing, when the file is absent
// or does not match; throws ERR_QUANT_CACHE only when a matching file cannot be read.
bool load_quant_cache(const std::string& path, ModelWeights& w, DType fmt, uint64_t fingerprint, MappedFile::Mode mode);

// Writes w's quantized targets (after quantize_weights) to path atomically.
void write_quant_cache(const std::string& path, ModelWeights& w, DType fmt, uint64_t fingerprint);

}  // namespace dg
