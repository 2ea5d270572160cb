// The API reference: Swagger UI (vendored in swagger-ui/, see README.md there) reading this
// server's own OpenAPI document. No validator badge (it would call validator.swagger.io) and
// no other host is ever contacted. "Authorize" takes a token as `Jwt <token>`.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  window.ui = SwaggerUIBundle({
    url: "/api/v2/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: false,
    validatorUrl: null,
    tryItOutEnabled: false,
    withCredentials: false,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
