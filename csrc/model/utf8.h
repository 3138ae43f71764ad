// Assembling UTF-8 text from token bytes as they arrive.
#pragma once

#include <string>

namespace bitnet::model {

// Splits `bytes` into the longest prefix of complete UTF-8 characters, returned with invalid
// bytes replaced by U+FFFD, leaving an incomplete trailing character in `bytes`. With flush,
// the incomplete tail is replaced too.
std::string take_utf8(std::string* bytes, bool flush);

// Follows a stream of bytes that must stay valid UTF-8 (nothing take_utf8 would replace): what
// may come next, given the characters so far. Grammar-constrained generation uses it, since
// libllama's grammar takes a token with a byte no character can start with for a character.
class Utf8Cursor {
 public:
  // Whether `bytes` continue the stream validly (a character may stay incomplete at the end).
  bool accepts(const std::string& bytes) const;
  void advance(const std::string& bytes);
  // No character is half-way.
  bool at_boundary() const { return have_ == need_; }

 private:
  // Steps over one byte; false when it cannot come next.
  bool step(unsigned char c);

  unsigned char lead_ = 0;
  int have_ = 0;  // bytes of the current character seen
  int need_ = 0;  // its length
};

// Whether `bytes` are whole, valid UTF-8 characters.
bool is_complete_utf8(const std::string& bytes);

}  // namespace bitnet::model
