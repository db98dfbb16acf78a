# -*- coding: utf-8 -*-

# The FTP service from Zato's cloud article, as published; the lines the article leaves out are
# marked `# filled:`.

import os # filled: the article uses os.path without importing it

# Zato
from zato.server.service import Service

class APIChannelSchedulerUpload(Service):
    """ Receives data to be uploaded to Dropbox.
    """ # filled: the article lost the docstring's closing quotes
    name = 'api.channel.scheduler.upload' # filled: the article's name was lost

    def handle(self):

        # Get a handle to an FTP connection
        conn = self.outgoing.ftp.get('My FTP Connection')

        # Directory to find the files in
        file_dir = '/'

        # List all files ..
        for file_name in conn.listdir(file_dir):

            # .. construct the full path ..
            full_path = os.path.join(file_dir, file_name)

            # .. download each file ..
            data = conn.getbytes(full_path)

            # .. send it to the Dropbox connector ..
            self.invoke('api.connector.dropbox', {
                'file_name': file_name,
                'data': data
            }) # filled: the article lost the closing of the dict and the call

            # .. and delete the file from the FTP server.
            conn.remove(full_path) # filled: the article's comment without its line
