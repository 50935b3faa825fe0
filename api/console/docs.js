// Swagger UI on this server's OpenAPI document. "Authorize" takes a token from
// POST /api/v1/auth/register or /auth/login (the console's sign-in stores one too).
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  persistAuthorization: true,
  tryItOutEnabled: true,
  validatorUrl: null,
});
