"""`python -m intake`: serve the API and web form on ARENA_HOST:ARENA_PORT."""
import uvicorn

from intake.app import create_app
from intake.config import Settings


def main() -> None:
    settings = Settings.from_env()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, proxy_headers=True)


if __name__ == "__main__":
    main()
