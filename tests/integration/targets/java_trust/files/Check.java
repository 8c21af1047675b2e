// Copyright (c) contributors to magrathea.secure
// GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
// SPDX-License-Identifier: GPL-3.0-or-later

// A minimal Java HTTPS client: exits 0 and prints the status when the TLS handshake
// verifies against the trust store given with -Djavax.net.ssl.trustStore, 1 otherwise.
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;

public class Check {
    public static void main(String[] args) throws Exception {
        try {
            HttpResponse<String> response = HttpClient.newHttpClient()
                .send(HttpRequest.newBuilder(URI.create(args[0])).build(), HttpResponse.BodyHandlers.ofString());
            System.out.println("HTTP " + response.statusCode());
        } catch (javax.net.ssl.SSLException e) {
            System.out.println("TLS FAILED " + e.getMessage());
            System.exit(1);
        }
    }
}
