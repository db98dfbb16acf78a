# -*- coding: utf-8 -*-

# The REST channel service from Zato's cloud article, as published; the lines the article leaves
# out are marked `# filled:`.

# Zato
from zato.server.service import Service

class APIChannelRESTUpload(Service):
    """ Receives data to be uploaded to Dropbox.
    """ # filled: the article lost the docstring's closing quotes
    name = 'api.channel.rest.upload' # filled: the article's name was lost

    def handle(self):

        # File name as a query parameter
        file_name = self.request.http.params.file_name

        # The whole data uploaded
        data = self.request.raw_request

        # Invoke the Dropbox connector with our input
        self.invoke('api.connector.dropbox', {
            'file_name': file_name,
            'data': data
        }) # filled: the article lost the closing of the dict and the call
