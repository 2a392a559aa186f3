// tools/diff/page_assets.h: the step-through page's files, embedded at build time (BUILD's
// genrule `page_assets` turns page.html and page.js into these NUL-terminated arrays).
#pragma once

namespace edu::diff {
extern const unsigned char kPageHtml[];
extern const unsigned char kPageJs[];
}  // namespace edu::diff
