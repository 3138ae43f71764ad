#include "gguf_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "errors.h"

namespace bitnet {

namespace {

[[noreturn]] void throw_errno(const std::string& path, const char* what) {
  const int err = errno;
  std::string msg = "cannot " + std::string(what) + " model file '" + path + "': " + std::strerror(err);
  if (err == ENOENT) msg += " (check the path; generate a test model with `python -m bitnet generate-model PATH`)";
  throw ModelLoadError(msg);
}

}  // namespace

MappedFile::MappedFile(const std::string& path, bool use_mmap) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw_errno(path, "open");
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    throw_errno(path, "stat");
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    throw ModelLoadError("model path '" + path + "' is a directory, not a GGUF file");
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ == 0) {
    ::close(fd);
    throw ModelLoadError("model file '" + path + "' is empty");
  }
  if (use_mmap) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      throw_errno(path, "memory-map");
    }
    data_ = static_cast<uint8_t*>(p);
    mapped_ = true;
  } else {
    // 64-byte alignment keeps SIMD loads of tensor data as aligned as in a mapping.
    data_ = static_cast<uint8_t*>(std::aligned_alloc(64, (size_ + 63) / 64 * 64));
    size_t done = 0;
    while (done < size_) {
      const ssize_t n = ::read(fd, data_ + done, size_ - done);
      if (n <= 0) {
        std::free(data_);
        data_ = nullptr;
        ::close(fd);
        throw_errno(path, "read");
      }
      done += static_cast<size_t>(n);
    }
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (mapped_) {
    ::munmap(data_, size_);
  } else {
    std::free(data_);
  }
}

void MappedFile::release(const uint8_t* p, size_t n) {
  if (!mapped_ || n == 0) return;
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + page - 1) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + n) / page * page;
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);  // advice only
}

void check_gguf_header(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    errno = errno ? errno : ENOENT;
    throw_errno(path, "open");
  }
  char magic[4] = {0, 0, 0, 0};
  f.read(magic, 4);
  if (f.gcount() < 4 || std::memcmp(magic, "GGUF", 4) != 0) {
    throw ModelLoadError("'" + path + "' is not a GGUF file (its first bytes are not the GGUF magic); "
                         "bitnet loads GGUF model files such as ggml-model-i2_s.gguf");
  }
}

gguf_context_ptr open_gguf(const std::string& path, ggml_context** meta) {
  check_gguf_header(path);
  gguf_init_params params{};
  params.no_alloc = true;
  params.ctx = meta;
  gguf_context* ctx = gguf_init_from_file(path.c_str(), params);
  if (ctx == nullptr) {
    throw ModelLoadError("cannot parse GGUF file '" + path +
                         "': the header, metadata or tensor table is damaged or truncated, or it "
                         "uses a tensor type this llama.cpp build does not know (see the "
                         "bitnet.native log for the reason)");
  }
  return gguf_context_ptr(ctx);
}

std::string gguf_string(const gguf_context* ctx, const std::string& key, const std::string& fallback) {
  const int64_t id = gguf_find_key(ctx, key.c_str());
  if (id < 0 || gguf_get_kv_type(ctx, id) != GGUF_TYPE_STRING) return fallback;
  return gguf_get_val_str(ctx, id);
}

int64_t gguf_int(const gguf_context* ctx, const std::string& key, int64_t fallback) {
  const int64_t id = gguf_find_key(ctx, key.c_str());
  if (id < 0) return fallback;
  switch (gguf_get_kv_type(ctx, id)) {
    case GGUF_TYPE_UINT8: return gguf_get_val_u8(ctx, id);
    case GGUF_TYPE_INT8: return gguf_get_val_i8(ctx, id);
    case GGUF_TYPE_UINT16: return gguf_get_val_u16(ctx, id);
    case GGUF_TYPE_INT16: return gguf_get_val_i16(ctx, id);
    case GGUF_TYPE_UINT32: return gguf_get_val_u32(ctx, id);
    case GGUF_TYPE_INT32: return gguf_get_val_i32(ctx, id);
    case GGUF_TYPE_UINT64: return static_cast<int64_t>(gguf_get_val_u64(ctx, id));
    case GGUF_TYPE_INT64: return gguf_get_val_i64(ctx, id);
    default: return fallback;
  }
}

double gguf_float(const gguf_context* ctx, const std::string& key, double fallback) {
  const int64_t id = gguf_find_key(ctx, key.c_str());
  if (id < 0) return fallback;
  switch (gguf_get_kv_type(ctx, id)) {
    case GGUF_TYPE_FLOAT32: return gguf_get_val_f32(ctx, id);
    case GGUF_TYPE_FLOAT64: return gguf_get_val_f64(ctx, id);
    default: return static_cast<double>(gguf_int(ctx, key, static_cast<int64_t>(fallback)));
  }
}

}  // namespace bitnet
