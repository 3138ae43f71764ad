#include "model/utf8.h"

namespace bitnet::model {

namespace {

constexpr char kReplacement[] = "\xEF\xBF\xBD";  // U+FFFD

// Length of the UTF-8 sequence starting with `lead`, or 0 when it cannot start one.
int utf8_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}

// Whether byte `k` (1-based) of a sequence led by `lead` may be `c`: continuation bytes, with
// the narrower second-byte ranges that exclude overlong forms, surrogates and code points past
// U+10FFFF (what Python's strict decoder rejects).
bool utf8_continuation_ok(unsigned char lead, int k, unsigned char c) {
  if (k == 1) {
    if (lead == 0xE0) return c >= 0xA0 && c <= 0xBF;
    if (lead == 0xED) return c >= 0x80 && c <= 0x9F;
    if (lead == 0xF0) return c >= 0x90 && c <= 0xBF;
    if (lead == 0xF4) return c >= 0x80 && c <= 0x8F;
  }
  return (c & 0xC0) == 0x80;
}

}  // namespace

std::string take_utf8(std::string* bytes, bool flush) {
  std::string out;
  const std::string& b = *bytes;
  size_t i = 0;
  while (i < b.size()) {
    const unsigned char lead = static_cast<unsigned char>(b[i]);
    const int len = utf8_length(lead);
    // Count how many bytes after the lead are valid for this sequence.
    int good = 1;
    while (good < len && i + good < b.size() &&
           utf8_continuation_ok(lead, good, static_cast<unsigned char>(b[i + good]))) {
      ++good;
    }
    if (len > 0 && good == len) {
      out.append(b, i, len);
      i += len;
    } else if (len > 0 && i + good == b.size() && !flush) {
      break;  // a valid start of a character whose remaining bytes have not arrived yet
    } else {
      out += kReplacement;
      ++i;
    }
  }
  bytes->erase(0, i);
  return out;
}

bool Utf8Cursor::step(unsigned char c) {
  if (have_ == need_) {  // a new character
    const int len = utf8_length(c);
    if (len == 0) return false;
    lead_ = c;
    have_ = 1;
    need_ = len;
    return true;
  }
  if (!utf8_continuation_ok(lead_, have_, c)) return false;
  ++have_;
  return true;
}

bool Utf8Cursor::accepts(const std::string& bytes) const {
  Utf8Cursor copy = *this;
  for (char c : bytes) {
    if (!copy.step(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

void Utf8Cursor::advance(const std::string& bytes) {
  for (char c : bytes) step(static_cast<unsigned char>(c));
}

bool is_complete_utf8(const std::string& bytes) {
  Utf8Cursor cursor;
  return cursor.accepts(bytes) && (cursor.advance(bytes), cursor.at_boundary());
}

}  // namespace bitnet::model
