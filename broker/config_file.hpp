#pragma once
// The layout of a config file: where each section and key is. Program_options
// reads the values but reports no line numbers, and it silently accepts what
// we want to refuse (a repeated section, a repeated key, an empty section
// name), so this scanner reads the file first, with the same line rules
// (a '#' starts a comment anywhere, blanks around names and values are
// dropped), refuses all of that with the line, and remembers every line.

#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace foreman::broker {

struct FileLayout {
    struct Section {
        std::string pool; ///< NAME of [pool.NAME]
        unsigned line;
    };
    std::vector<Section> sections;             ///< in file order
    std::map<std::string, unsigned> key_lines; ///< "max_workers", "pool.echo.path" -> line

    /// The line of a key (full name), 0 if the file does not have it.
    unsigned line_of(const std::string& key) const;
    /// The line of [pool.NAME], 0 if the file does not have it.
    unsigned section_line(const std::string& pool) const;
};

/// Scans the text of config file `file` (named in errors). Global keys are
/// allowed before the first section, pool keys inside [pool.NAME] sections.
/// Throws ConfigError for a malformed line, a section other than
/// [pool.NAME], a repeated section, a repeated or unknown key.
FileLayout scan_config_file(std::string_view text, const std::string& file,
                            const std::vector<std::string>& global_keys,
                            const std::vector<std::string>& pool_keys);

} // namespace foreman::broker
