// Read-only view of a GGUF file: mapping, header checks and metadata.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "ggml-cpp.h"

namespace bitnet {

// The bytes of a file, memory-mapped (use_mmap) or read into an owned buffer.
class MappedFile {
 public:
  MappedFile(const std::string& path, bool use_mmap);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  uint8_t* mutable_data() { return data_; }
  size_t size() const { return size_; }
  // Lets the kernel drop the pages wholly inside [p, p + n) from this process's memory once the
  // caller has a copy of their bytes (a mapping only: they would be read back from the file).
  void release(const uint8_t* p, size_t n);

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  bool mapped_ = false;
};

// Throws ModelLoadError naming `path` and the problem when the file is missing, unreadable,
// or does not start with the GGUF magic.
void check_gguf_header(const std::string& path);

// Opens the metadata and tensor table (no tensor data is read). `meta` receives the ggml
// context of tensor descriptions when not null. Throws ModelLoadError with the reason.
gguf_context_ptr open_gguf(const std::string& path, ggml_context** meta);

// Typed getters that fall back to `fallback` when the key is absent.
std::string gguf_string(const gguf_context* ctx, const std::string& key, const std::string& fallback);
int64_t gguf_int(const gguf_context* ctx, const std::string& key, int64_t fallback);
double gguf_float(const gguf_context* ctx, const std::string& key, double fallback);

}  // namespace bitnet
