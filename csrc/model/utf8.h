// Assembling UTF-8 text from token bytes as they arrive.
#pragma once

#include <string>

namespace bitnet::model {

// Splits `bytes` into the longest prefix of complete UTF-8 characters, returned with invalid
// bytes replaced by U+FFFD, leaving an incomplete trailing character in `bytes`. With flush,
// the incomplete tail is replaced too.
std::string take_utf8(std::string* bytes, bool flush);

}  // namespace bitnet::model
