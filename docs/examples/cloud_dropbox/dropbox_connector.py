# -*- coding: utf-8 -*-

# The Dropbox connector from Zato's cloud article, as published; the lines the article leaves out
# are marked `# filled:`.

# Zato
from zato.server.service import Service

# Code completion imports
if 0:
    from dropbox import Dropbox
    from zato.server.generic.api.cloud_dropbox import CloudDropbox

class DropboxConnector(Service):
    """ Receives data to be uploaded to Dropbox.
    """ # filled: the article lost the docstring's closing quotes
    name = 'api.connector.dropbox'

    class SimpleIO:
        input_required = 'file_name', 'data'

    def handle(self):

        # Connection to use
        conn_name = 'My Connection'

        # Get the connection object
        conn = self.cloud.dropbox[conn_name].conn # type: CloudDropbox # filled: `self.cloud.dropbox`

        # Get the underlying Dropbox client
        client = conn.client # type: Dropbox

        # Upload the file received
        data = self.request.input.data # filled: from here to the end
        data = data.encode('utf-8') if isinstance(data, str) else data # a text body arrives as str
        conn.upload(self.request.input.file_name, data, overwrite=True) # a second run replaces, not conflicts
