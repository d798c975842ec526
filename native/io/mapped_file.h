// Read-only memory map of a whole file, with bounds-checked slices.
// The safetensors header is parsed and validated in TypeScript (lib/io); the
// native side re-checks every slice it is handed against the real file size.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

namespace dg {

class MappedFile {
 public:
  static std::shared_ptr<MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::string& path() const { return path_; }
  uint64_t size() const { return size_; }
  // Pointer to [offset, offset + length); throws ERR_SAFETENSORS if out of the file.
  const uint8_t* slice(uint64_t offset, uint64_t length, const std::string& what) const;

 private:
  MappedFile(std::string path, const uint8_t* data, uint64_t size)
      : path_(std::move(path)), data_(data), size_(size) {}
  std::string path_;
  const uint8_t* data_;
  uint64_t size_;
};

}  // namespace dg
