// docs/configuration.md against `foreman --help`, so the two cannot drift:
// every global and pool key that --help lists has a row in the page's
// tables and every row is a key --help lists; every command-line option is
// named in the page's "Command line" section.

#include "broker_harness.hpp"

#include <catch2/catch.hpp>

#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

using namespace foreman::test;

namespace {

struct Keys {
    std::set<std::string> options; ///< --help, --config...
    std::set<std::string> global;
    std::set<std::string> pool;
};

/// The keys of `foreman --help`, by its "Options:", "Global keys" and
/// "Pool keys" headings.
Keys help_keys(const std::string& help) {
    static const std::regex option(R"(^  (?:-\w \[ )?--([a-z][a-z_-]*)\b.*)");
    static const std::regex pool_key(R"(^  --pool\.NAME\.([a-z_]+)\b.*)");
    Keys keys;
    std::set<std::string>* into = nullptr;
    std::stringstream lines(help);
    std::string line;
    std::smatch m;
    while (std::getline(lines, line)) {
        if (line.rfind("Options:", 0) == 0) into = &keys.options;
        else if (line.rfind("Global keys", 0) == 0) into = &keys.global;
        else if (line.rfind("Pool keys", 0) == 0) into = &keys.pool;
        else if (into == &keys.pool && std::regex_match(line, m, pool_key)) into->insert(m[1]);
        else if (into && into != &keys.pool && std::regex_match(line, m, option)) into->insert(m[1]);
    }
    return keys;
}

/// The text of each "## " section of a Markdown page, by heading.
std::map<std::string, std::string> sections(const std::string& markdown) {
    std::map<std::string, std::string> out;
    std::string* current = nullptr;
    std::stringstream lines(markdown);
    std::string line;
    while (std::getline(lines, line)) {
        if (line.rfind("## ", 0) == 0) current = &out[line.substr(3)];
        else if (current) current->append(line).push_back('\n');
    }
    return out;
}

/// The first cells of a Markdown table's rows, header row excepted.
std::set<std::string> table_keys(const std::string& text) {
    static const std::regex row(R"(^\| *([a-z_]+) *\|.*)");
    std::set<std::string> keys;
    std::stringstream lines(text);
    std::string line;
    std::smatch m;
    while (std::getline(lines, line))
        if (std::regex_match(line, m, row) && m[1] != "key") keys.insert(m[1]);
    return keys;
}

bool names_option(const std::string& text, const std::string& option) {
    return std::regex_search(text, std::regex("--" + option + "(?![A-Za-z0-9_.-])"));
}

std::string read_file(const std::string& path) {
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

} // namespace

TEST_CASE("docs/configuration.md has a row for every key of foreman --help, and none for any other",
          "[docs]") {
    auto help = run_process({std::string(FOREMAN_BIN_DIR) + "/foreman", "--help"});
    REQUIRE(help.status == 0);
    Keys keys = help_keys(help.out);
    // The parser found them all, not nothing: --help has these many at least.
    REQUIRE(keys.options.size() >= 5);
    REQUIRE(keys.global.size() >= 8);
    REQUIRE(keys.pool.size() >= 20);

    std::string page = read_file(std::string(FOREMAN_SOURCE_DIR) + "/docs/configuration.md");
    REQUIRE_FALSE(page.empty());
    auto parts = sections(page);
    const std::pair<const char*, const std::set<std::string>*> tables[] = {{"Global keys", &keys.global},
                                                                          {"Pool keys", &keys.pool}};
    for (const auto& [heading, help_set] : tables) {
        REQUIRE(parts.count(heading));
        std::set<std::string> documented = table_keys(parts[heading]);
        for (const auto& key : *help_set)
            if (!documented.count(key))
                FAIL_CHECK("docs/configuration.md, \"" << heading << "\", lacks " << key << " (in foreman --help)");
        for (const auto& key : documented)
            if (!help_set->count(key))
                FAIL_CHECK("docs/configuration.md, \"" << heading << "\", has " << key
                                                      << ", which foreman --help does not list");
    }
    REQUIRE(parts.count("Command line"));
    for (const auto& option : keys.options)
        if (!names_option(parts["Command line"], option))
            FAIL_CHECK("docs/configuration.md, \"Command line\", does not name --" << option);
}
