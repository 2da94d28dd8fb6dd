"""The thin Streamlit layer: cached resources and small widgets. The only saelab code importing streamlit.

Importing this package (every page does, through one of its modules) first makes sure the page runs under
app.py's navigation: see `saelab.ui.navigation`. Inside a script run that may rerun the script, which
raises out of this import on purpose.
"""

from saelab.ui import navigation  # bound here too, so the attribute exists after a rerun re-imports the package

navigation.ensure_app_navigation()
