#include "broker/config_file.hpp"

#include "broker/config.hpp"

#include <algorithm>

namespace foreman::broker {

namespace {

/// Program_options' trim_ws: these four, nothing else.
constexpr std::string_view blanks = " \t\r\n";

std::string_view trim(std::string_view s) {
    const auto first = s.find_first_not_of(blanks);
    if (first == std::string_view::npos) return {};
    const auto last = s.find_last_not_of(blanks);
    return s.substr(first, last - first + 1);
}

bool contains(const std::vector<std::string>& keys, std::string_view key) {
    return std::find(keys.begin(), keys.end(), key) != keys.end();
}

/// Quotes text for an error message on one line.
std::string shown(std::string_view text) {
    constexpr std::size_t max_shown = 120;
    std::string out = "'";
    out.append(text.substr(0, max_shown));
    if (text.size() > max_shown) out += "...";
    out += "'";
    return out;
}

} // namespace

unsigned FileLayout::line_of(const std::string& key) const {
    const auto it = key_lines.find(key);
    return it == key_lines.end() ? 0 : it->second;
}

unsigned FileLayout::section_line(const std::string& pool) const {
    for (const auto& s : sections)
        if (s.pool == pool) return s.line;
    return 0;
}

FileLayout scan_config_file(std::string_view text, const std::string& file,
                            const std::vector<std::string>& global_keys,
                            const std::vector<std::string>& pool_keys) {
    FileLayout layout;
    std::string prefix; // "" before the first section, then "pool.NAME."
    unsigned line_no = 0;
    std::size_t pos = 0;
    while (pos < text.size()) {
        const auto end = std::min(text.find('\n', pos), text.size());
        std::string_view line = text.substr(pos, end - pos);
        pos = end + 1;
        ++line_no;

        // Program_options cuts at the first '#', even inside quotes.
        if (const auto hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
        line = trim(line);
        if (line.empty()) continue;

        if (line.front() == '[' && line.back() == ']') {
            const auto inner = line.substr(1, line.size() - 2);
            if (!inner.starts_with("pool."))
                throw ConfigError(file, line_no, std::string(line),
                                  "unknown section; sections are [pool.NAME]");
            const auto name = inner.substr(5);
            if (!is_valid_pool_name(name))
                throw ConfigError(file, line_no, std::string(line),
                                  "invalid pool name " + shown(name) + " (1 to 64 of A-Z a-z 0-9 _ . -)");
            if (name.back() == '.')
                // Program_options would read [pool.x.] as [pool.x].
                throw ConfigError(file, line_no, std::string(line),
                                  "a pool name ending in '.' cannot be a section name");
            if (const auto first = layout.section_line(std::string(name)); first != 0)
                throw ConfigError(file, line_no, std::string(line),
                                  "duplicate section (first at line " + std::to_string(first) + ")");
            layout.sections.push_back({std::string(name), line_no});
            prefix = "pool." + std::string(name) + ".";
            continue;
        }

        const auto eq = line.find('=');
        if (eq == std::string_view::npos)
            throw ConfigError(file, line_no, "",
                              "malformed line " + shown(line) + " (expected 'key = value' or '[pool.NAME]')");
        const auto key = trim(line.substr(0, eq));
        const std::string full = prefix + std::string(key);
        if (key.empty())
            throw ConfigError(file, line_no, "", "malformed line " + shown(line) + " (no key before '=')");
        if (prefix.empty() && !contains(global_keys, key))
            throw ConfigError(file, line_no, full,
                              contains(pool_keys, key)
                                  ? "unknown global key (a pool key outside a [pool.NAME] section?)"
                                  : "unknown key");
        if (!prefix.empty() && !contains(pool_keys, key))
            throw ConfigError(file, line_no, full,
                              contains(global_keys, key)
                                  ? "unknown pool key (global keys come before the first section)"
                                  : "unknown key");
        const auto [it, inserted] = layout.key_lines.emplace(full, line_no);
        if (!inserted)
            throw ConfigError(file, line_no, full,
                              "given twice (first at line " + std::to_string(it->second) + ")");
    }
    return layout;
}

} // namespace foreman::broker
