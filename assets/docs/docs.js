// The API reference: Swagger UI (embedded in the binary) over /openapi.json.
// "Try it out" sends requests to this server with the token given under
// "Authorize" (a JWT from POST /v1/auth/token, or an API key).
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    tryItOutEnabled: false,
    persistAuthorization: false,
  });
});
