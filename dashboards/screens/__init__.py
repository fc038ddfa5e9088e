"""One module per dashboard page, each with a ``render()`` that app.py hands to ``st.navigation``.

Not called ``pages/``: Streamlit treats a ``pages/`` folder beside the main script as old-style pages,
and a browser opening ``/leaderboard`` directly would run ``pages/leaderboard.py`` as a script of its
own (an empty page) instead of the app.
"""
