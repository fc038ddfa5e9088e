"""A real OpenID Connect provider for the tests, built from authlib's own server components.

Discovery document, JWKS, an authorization endpoint that approves the configured test user at once
(what a provider does after its login and consent screens), a token endpoint that issues an RS256
ID token, and a userinfo endpoint; PKCE (S256) is required. It runs as a Starlette app on a loopback port.
"""
from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass, field

from authlib.oauth2 import AuthorizationServer, OAuth2Request
from authlib.oauth2.rfc6749 import ClientMixin, grants
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")  # the provider speaks plain HTTP on loopback


class StarletteOAuth2Request(OAuth2Request):
    """authlib's request view of a Starlette request whose form was already read."""

    def __init__(self, request: Request, query: dict, form: dict):
        super().__init__(request.method, str(request.url), headers=request.headers)  # case-insensitive
        self._args, self._form = query, form
        self.payload = BasicOAuth2Payload({**query, **form})

    @property
    def args(self):
        return self._args

    @property
    def form(self):
        return self._form


@dataclass
class ProviderUser:
    sub: str
    email: str
    name: str
    email_verified: bool = True


@dataclass
class Client(ClientMixin):
    client_id: str
    client_secret: str
    redirect_uris: list[str]

    def get_client_id(self): return self.client_id
    def get_default_redirect_uri(self): return self.redirect_uris[0]
    def get_allowed_scope(self, scope): return scope
    def check_redirect_uri(self, redirect_uri): return redirect_uri in self.redirect_uris
    def check_client_secret(self, client_secret): return secrets.compare_digest(client_secret, self.client_secret)
    def check_endpoint_auth_method(self, method, endpoint): return method == "client_secret_basic"
    def check_response_type(self, response_type): return response_type == "code"
    def check_grant_type(self, grant_type): return grant_type == "authorization_code"


@dataclass
class AuthorizationCode:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: ProviderUser
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    auth_time: int = field(default_factory=lambda: int(time.time()))

    def get_redirect_uri(self): return self.redirect_uri
    def get_scope(self): return self.scope
    def get_nonce(self): return self.nonce
    def get_auth_time(self): return self.auth_time
    def get_acr(self): return None
    def get_amr(self): return None


class Provider:
    """State of the provider: its key, clients, codes, tokens, and who is "logged in" there."""

    def __init__(self, issuer: str):
        self.issuer = issuer
        self.id_token_issuer = issuer  # what the ID tokens claim; a test may make the provider lie
        self.key = RSAKey.generate_key(2048, parameters={"kid": "test-key", "use": "sig", "alg": "RS256"})
        self.clients: dict[str, Client] = {}
        self.codes: dict[str, AuthorizationCode] = {}
        self.access_tokens: dict[str, ProviderUser] = {}
        self.user: ProviderUser | None = None
        self.pkce_challenges: list[str] = []  # what the relying party sent, for the tests to inspect
        self.server = self._server()

    def add_client(self, client_id: str, client_secret: str, redirect_uri: str) -> None:
        self.clients[client_id] = Client(client_id, client_secret, [redirect_uri])

    def _server(self) -> AuthorizationServer:
        provider = self

        class Server(AuthorizationServer):
            def query_client(self, client_id):
                return provider.clients.get(client_id)

            def save_token(self, token, request):
                provider.access_tokens[token["access_token"]] = request.user

            def create_oauth2_request(self, request):
                return request  # already an OAuth2Request, built in the handlers (the body is async there)

            def send_signal(self, name, *args, **kwargs):
                pass  # no listeners here

            def handle_response(self, status, body, headers):
                if isinstance(body, dict):
                    return JSONResponse(body, status, dict(headers))
                return Response(body, status, dict(headers))

        class CodeGrant(grants.AuthorizationCodeGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic"]

            def save_authorization_code(self, code, request):
                data = request.payload.data
                provider.pkce_challenges.append(data.get("code_challenge_method"))
                provider.codes[code] = AuthorizationCode(
                    code, request.client.client_id, request.payload.redirect_uri, request.payload.scope,
                    request.user, data.get("nonce"), data.get("code_challenge"), data.get("code_challenge_method"))

            def query_authorization_code(self, code, client):
                found = provider.codes.get(code)
                return found if found and found.client_id == client.client_id else None

            def delete_authorization_code(self, authorization_code):
                provider.codes.pop(authorization_code.code, None)

            def authenticate_user(self, authorization_code):
                return authorization_code.user

        class IdToken(OpenIDCode):
            def exists_nonce(self, nonce, request):
                return any(c.nonce == nonce for c in provider.codes.values())

            def resolve_client_private_key(self, client):
                return provider.key

            def get_client_algorithm(self, client):
                return "RS256"

            def get_encode_header(self, client):
                return {"alg": "RS256", "kid": "test-key"}

            def get_client_claims(self, client):
                return {"iss": provider.id_token_issuer, "aud": [client.get_client_id()]}

            def generate_user_info(self, user, scope):
                return UserInfo(sub=user.sub, name=user.name, preferred_username=user.name,
                                email=user.email, email_verified=user.email_verified)

        server = Server()
        server.register_token_generator("default", BearerTokenGenerator(
            lambda **_: secrets.token_urlsafe(24)))
        server.register_grant(CodeGrant, [CodeChallenge(required=True), IdToken(require_nonce=True)])
        return server

    # -- HTTP ---------------------------------------------------------------------------------
    async def _request(self, request: Request) -> OAuth2Request:
        form = dict(await request.form()) if request.method == "POST" else {}
        return StarletteOAuth2Request(request, dict(request.query_params), form)

    async def authorize(self, request: Request) -> Response:
        oauth_request = await self._request(request)
        if self.user is None:
            return Response("nobody is logged in at the provider", 401)
        return self.server.create_authorization_response(oauth_request, grant_user=self.user)

    async def token(self, request: Request) -> Response:
        return self.server.create_token_response(await self._request(request))

    async def discovery(self, _request: Request) -> Response:
        i = self.issuer
        return JSONResponse({
            "issuer": i, "authorization_endpoint": f"{i}/authorize", "token_endpoint": f"{i}/token",
            "userinfo_endpoint": f"{i}/userinfo", "jwks_uri": f"{i}/jwks", "response_types_supported": ["code"],
            "subject_types_supported": ["public"], "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"], "scopes_supported": ["openid", "email", "profile"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic"]})

    async def jwks(self, _request: Request) -> Response:
        return JSONResponse({"keys": [self.key.as_dict(private=False)]})

    async def userinfo(self, request: Request) -> Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        user = self.access_tokens.get(token)
        if user is None:
            return JSONResponse({"error": "invalid_token"}, 401)
        return JSONResponse({"sub": user.sub, "email": user.email, "name": user.name})

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/.well-known/openid-configuration", self.discovery), Route("/jwks", self.jwks),
            Route("/authorize", self.authorize), Route("/token", self.token, methods=["POST"]),
            Route("/userinfo", self.userinfo)])
