#pragma once
/// Files built into crunchd, so that it serves them with nothing beside it (cmake/embed.cmake).

#include <string_view>

namespace crunch {

/// api/openapi-base.json: the OpenAPI 3.1 description of every route but the job kinds', to which
/// openapi.hpp adds theirs.
extern const std::string_view openapi_base;
/// web/index.html: the live view's page, served at GET /.
extern const std::string_view live_page;
/// web/live.js and web/live.css: the page's script and style.
extern const std::string_view live_script;
extern const std::string_view live_style;
/// uPlot (web/vendor/uplot, from npm `uplot`, MIT): the page's charts.
extern const std::string_view uplot_script;
extern const std::string_view uplot_style;

}  // namespace crunch
